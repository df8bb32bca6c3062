{{/* The release's names and labels, and the choices several templates share. */}}

{{- define "tidings.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tidings.fullname" -}}
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

{{- define "tidings.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tidings.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tidings.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tidings.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tidings.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "tidings.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tidings.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret the gateway reads: the user's own, or the chart's when it has values; empty when neither. */}}
{{- define "tidings.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else if .Values.secrets.values }}
{{- include "tidings.fullname" . }}
{{- end }}
{{- end }}

{{/* Where the gateway reads its policies: the ConfigMap's mount, or the folder in git-sync's checkout. */}}
{{- define "tidings.policyDir" -}}
{{- if eq .Values.policies.source "gitSync" }}
{{- trimSuffix "/" (printf "/git/current/%s" (trimPrefix "/" .Values.policies.gitSync.path)) }}
{{- else }}
{{- print "/etc/tidings/policies" }}
{{- end }}
{{- end }}

{{/* git-sync, as the init container (one sync before the gateway starts: "oneTime") and as the sidecar. */}}
{{- define "tidings.gitSync" -}}
{{- $values := .ctx.Values.policies.gitSync -}}
image: "{{ $values.image.repository }}:{{ $values.image.tag }}"
imagePullPolicy: {{ $values.image.pullPolicy }}
env:
  - {name: GITSYNC_REPO, value: {{ $values.repo | quote }}}
  - {name: GITSYNC_REF, value: {{ $values.ref | quote }}}
  - {name: GITSYNC_ROOT, value: /git}
  - {name: GITSYNC_LINK, value: current}
  - {name: GITSYNC_PERIOD, value: {{ $values.period | quote }}}
  - {name: GITSYNC_DEPTH, value: "1"}
  - {name: GITSYNC_ONE_TIME, value: {{ .oneTime | quote }}}
  - {name: HOME, value: /tmp}
{{- with $values.existingSecret }}
envFrom:
  - secretRef: {name: {{ . }}}
{{- end }}
resources:
  {{- toYaml $values.resources | nindent 2 }}
securityContext:
  {{- include "tidings.containerSecurityContext" .ctx | nindent 2 }}
volumeMounts:
  - {name: policies, mountPath: /git}
  - {name: tmp, mountPath: /tmp}
{{- end }}

{{- define "tidings.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}
