{{/* Chart name, truncated to a DNS label. */}}
{{- define "mimir-edge-envoy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name when it already holds the chart name ("mimir-envoy" for the guide's release). */}}
{{- define "mimir-edge-envoy.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mimir-edge-envoy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mimir-edge-envoy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mimir-edge-envoy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mimir-edge-envoy.labels" -}}
helm.sh/chart: {{ include "mimir-edge-envoy.chart" . }}
{{ include "mimir-edge-envoy.selectorLabels" . }}
app.kubernetes.io/component: envoy
app.kubernetes.io/part-of: mimir-edge
app.kubernetes.io/version: {{ include "mimir-edge-envoy.tag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "mimir-edge-envoy.tag" -}}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "mimir-edge-envoy.image" -}}
{{- printf "%s/%s:%s" .Values.image.registry .Values.image.repository (include "mimir-edge-envoy.tag" .) }}
{{- end }}

{{- define "mimir-edge-envoy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mimir-edge-envoy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mimir-edge-envoy.minReplicas" -}}
{{- if .Values.hpa.enabled }}
{{- .Values.hpa.minReplicas | default .Values.replicaCount | int }}
{{- else }}
{{- .Values.replicaCount | int }}
{{- end }}
{{- end }}

{{/* The RLS address: rls.host, or the mimir-rls chart's headless Service (one DNS record
per ready pod, so Envoy spreads the checks over every replica). Mirrored by
mimir_edge.envoy_helm.rls_host. */}}
{{- define "mimir-edge-envoy.rlsHost" -}}
{{- if .Values.rls.host }}
{{- .Values.rls.host }}
{{- else }}
{{- printf "%s.%s.svc.%s" .Values.rls.service (.Values.rls.namespace | default .Release.Namespace) .Values.clusterDomain }}
{{- end }}
{{- end }}

{{/* "true" for an IP literal (a STATIC cluster), empty for a DNS name (STRICT_DNS), as
mimir_edge.envoy_config decides with Python's ipaddress. */}}
{{- define "mimir-edge-envoy.isIP" -}}
{{- if or (regexMatch "^[0-9]{1,3}([.][0-9]{1,3}){3}$" .) (contains ":" .) }}true{{ end }}
{{- end }}
