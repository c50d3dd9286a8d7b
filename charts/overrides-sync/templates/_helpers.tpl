{{/* Chart name, truncated to a DNS label. */}}
{{- define "overrides-sync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name when it already holds the chart name ("overrides-sync"). */}}
{{- define "overrides-sync.fullname" -}}
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

{{- define "overrides-sync.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "overrides-sync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "overrides-sync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "overrides-sync.labels" -}}
helm.sh/chart: {{ include "overrides-sync.chart" . }}
{{ include "overrides-sync.selectorLabels" . }}
app.kubernetes.io/component: overrides-sync
app.kubernetes.io/part-of: mimir-edge
app.kubernetes.io/version: {{ include "overrides-sync.tag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "overrides-sync.tag" -}}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "overrides-sync.image" -}}
{{- printf "%s/%s:%s" .Values.image.registry .Values.image.repository (include "overrides-sync.tag" .) }}
{{- end }}

{{- define "overrides-sync.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "overrides-sync.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "overrides-sync.leaseName" -}}
{{- .Values.leaderElection.leaseName | default (include "overrides-sync.fullname" .) }}
{{- end }}

{{/* A float flag value without Helm's exponent notation (1e+06). */}}
{{- define "overrides-sync.number" -}}
{{- if eq (float64 .) (float64 (int64 .)) }}{{ int64 . }}{{ else }}{{ float64 . }}{{ end }}
{{- end }}
