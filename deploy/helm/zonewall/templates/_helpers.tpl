{{/* Base name of every object: the release name, with "zonewall" added when absent. */}}
{{- define "zonewall.fullname" -}}
{{- if contains "zonewall" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-zonewall" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "zonewall.agentName" -}}
{{- printf "%s-agent" (include "zonewall.fullname" .) -}}
{{- end -}}

{{- define "zonewall.syncName" -}}
{{- printf "%s-sync" (include "zonewall.fullname" .) -}}
{{- end -}}

{{/* The one ServiceAccount the admission policy lets write the firewall tier. */}}
{{- define "zonewall.syncServiceAccountName" -}}
{{- include "zonewall.syncName" . -}}
{{- end -}}

{{- define "zonewall.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "zonewall.labels" -}}
app.kubernetes.io/part-of: zonewall
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
