#!/bin/bash
# preStop of the Envoy container: start a graceful drain of the listeners, then wait it out.
# While the pod leaves the Service, Envoy still accepts connections, but every HTTP/1
# response carries `Connection: close` (HTTP/2 gets GOAWAY), so NGINX's keep-alive
# connections end after their current request instead of being cut by SIGTERM.
# Envoy's admin API wants a POST and the image has no curl: bash's /dev/tcp speaks HTTP/1.1.
# Usage: prestop.sh ADMIN_PORT DRAIN_SECONDS
set -u
admin_port="$1"
drain_seconds="$2"
if exec 3<>"/dev/tcp/127.0.0.1/${admin_port}"; then
  printf 'POST /drain_listeners?graceful HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n' >&3
  read -r -t 5 status <&3 && echo "envoy drain: ${status%$'\r'}"
  exec 3<&-
fi
sleep "${drain_seconds}"
