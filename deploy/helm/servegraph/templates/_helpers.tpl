{{- define "servegraph.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "servegraph.fullname" -}}
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

{{- define "servegraph.selectorLabels" -}}
app.kubernetes.io/name: {{ include "servegraph.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "servegraph.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "servegraph.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "servegraph.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "servegraph.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "servegraph.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "servegraph.configMapName" -}}
{{- default (include "servegraph.fullname" .) .Values.graph.existingConfigMap }}
{{- end }}

{{- define "servegraph.secretName" -}}
{{- default (include "servegraph.fullname" .) .Values.adminToken.existingSecret }}
{{- end }}

{{/* The graph file's parsed content (empty with existingConfigMap). */}}
{{- define "servegraph.graphDoc" -}}
{{- if .Values.graph.existingConfigMap }}{{ dict | toJson }}{{ else }}
{{- $doc := fromYaml .Values.graph.content }}
{{- if hasKey $doc "Error" }}{{ fail (printf "graph.content is not valid YAML: %s" $doc.Error) }}{{ end }}
{{- $doc | toJson }}{{ end }}
{{- end }}

{{/* terminationGracePeriodSeconds: preStop + drain grace + shutdown timeout + 10 s margin. */}}
{{- define "servegraph.terminationGrace" -}}
{{- $s := .Values.server }}
{{- $need := add (int $s.preStopSeconds) (int (ceil $s.drainGrace)) (int $s.shutdownTimeout) }}
{{- if eq (int $s.terminationGracePeriodSeconds) 0 }}
{{- add $need 10 }}
{{- else if lt (int $s.terminationGracePeriodSeconds) (int $need) }}
{{- fail (printf "server.terminationGracePeriodSeconds (%d) is below server.preStopSeconds + server.drainGrace + server.shutdownTimeout (%d): the kubelet would SIGKILL pods still draining" (int $s.terminationGracePeriodSeconds) (int $need)) }}
{{- else }}
{{- $s.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}
