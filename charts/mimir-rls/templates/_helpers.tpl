{{/* Chart name, truncated to a DNS label. */}}
{{- define "mimir-rls.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name when it already holds the chart name ("mimir-rls"). */}}
{{- define "mimir-rls.fullname" -}}
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

{{- define "mimir-rls.headlessName" -}}
{{- printf "%s-headless" (include "mimir-rls.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{- define "mimir-rls.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mimir-rls.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mimir-rls.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mimir-rls.labels" -}}
helm.sh/chart: {{ include "mimir-rls.chart" . }}
{{ include "mimir-rls.selectorLabels" . }}
app.kubernetes.io/component: rls
app.kubernetes.io/part-of: mimir-edge
app.kubernetes.io/version: {{ include "mimir-rls.tag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "mimir-rls.tag" -}}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "mimir-rls.image" -}}
{{- printf "%s/%s:%s" .Values.image.registry .Values.image.repository (include "mimir-rls.tag" .) }}
{{- end }}

{{- define "mimir-rls.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mimir-rls.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the admin token: the given one, or the chart's. */}}
{{- define "mimir-rls.adminTokenSecret" -}}
{{- .Values.adminToken.existingSecret | default (printf "%s-admin-token" (include "mimir-rls.fullname" .)) }}
{{- end }}

{{/* Lowest replica count: each replica enforces 1/instances of every rate. */}}
{{- define "mimir-rls.minReplicas" -}}
{{- if .Values.hpa.enabled }}
{{- .Values.hpa.minReplicas | default .Values.replicaCount | int }}
{{- else }}
{{- .Values.replicaCount | int }}
{{- end }}
{{- end }}

{{- define "mimir-rls.instances" -}}
{{- .Values.limits.instances | default (include "mimir-rls.minReplicas" .) | int }}
{{- end }}

{{/* A float flag value without Helm's exponent notation (1e+06). */}}
{{- define "mimir-rls.number" -}}
{{- if eq (float64 .) (float64 (int64 .)) }}{{ int64 . }}{{ else }}{{ float64 . }}{{ end }}
{{- end }}

{{/* The Service overrides-sync pushes through: every pod, ready or not. */}}
{{- define "mimir-rls.syncName" -}}
{{- printf "%s-sync" (include "mimir-rls.fullname" . | trunc 58 | trimSuffix "-") }}
{{- end }}

{{/* Whether the pods wait for overrides-sync's first push before turning ready. */}}
{{- define "mimir-rls.waitForLimits" -}}
{{- if and (not .Values.overrides.configMap) .Values.overrides.waitForSync.enabled }}true{{ end }}
{{- end }}
