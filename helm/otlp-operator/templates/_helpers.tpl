{{- define "otlp-operator.name" -}}otlp-operator{{- end -}}
{{- define "otlp-operator.labels" -}}
app.kubernetes.io/name: otlp-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "otlp-operator.selector" -}}
app.kubernetes.io/name: otlp-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
