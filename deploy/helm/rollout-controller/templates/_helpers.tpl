{{/* The chart's names and labels. */}}
{{- define "rollout.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rollout.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "rollout.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "rollout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: worker or notifier. */}}
{{- define "rollout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rollout.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "rollout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "rollout.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "rollout.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Secret with the Kafka credentials: the user's or the chart's. */}}
{{- define "rollout.kafkaSecretName" -}}
{{- default (printf "%s-kafka" (include "rollout.fullname" .)) .Values.kafka.existingSecret -}}
{{- end -}}

{{- define "rollout.kafkaTlsSecretName" -}}
{{- default (printf "%s-kafka-tls" (include "rollout.fullname" .)) .Values.kafka.tls.existingSecret -}}
{{- end -}}

{{- define "rollout.policiesConfigMapName" -}}
{{- default (printf "%s-policies" (include "rollout.fullname" .)) .Values.policies.existingConfigMap.name -}}
{{- end -}}

{{/* The policy files the worker reads: a list of {key, env} (empty: the packaged defaults). */}}
{{- define "rollout.policyFiles" -}}
{{- $files := list -}}
{{- if .Values.policies.existingConfigMap.name -}}
{{- with .Values.policies.existingConfigMap.rolloutKey -}}
{{- $files = append $files (dict "key" . "env" "ROLLOUT_POLICY_FILE") -}}
{{- end -}}
{{- with .Values.policies.existingConfigMap.monitoringKey -}}
{{- $files = append $files (dict "key" . "env" "ROLLOUT_MONITORING_POLICY_FILE") -}}
{{- end -}}
{{- else -}}
{{- if .Values.policies.rollout -}}
{{- $files = append $files (dict "key" "rollout.yaml" "env" "ROLLOUT_POLICY_FILE") -}}
{{- end -}}
{{- if .Values.policies.monitoring -}}
{{- $files = append $files (dict "key" "monitoring.yaml" "env" "ROLLOUT_MONITORING_POLICY_FILE") -}}
{{- end -}}
{{- end -}}
{{- toJson (dict "files" $files) -}}
{{- end -}}

{{/* A policy given as YAML text or as a map, as the text of a file. */}}
{{- define "rollout.policyText" -}}
{{- if kindIs "string" . -}}{{ . }}{{- else -}}{{ toYaml . }}{{- end -}}
{{- end -}}

{{/* Environment and mounts every pod of the chart shares: the settings, Kafka's credentials,
     its TLS files. */}}
{{- define "rollout.kafkaEnvFrom" -}}
- configMapRef:
    name: {{ include "rollout.fullname" . }}
- secretRef:
    name: {{ include "rollout.kafkaSecretName" . }}
{{- end -}}

{{- define "rollout.kafkaTlsEnv" -}}
{{- if .Values.kafka.tls.enabled }}
- name: ROLLOUT_SSL_CAFILE
  value: {{ printf "/etc/rollout/kafka-tls/%s" .Values.kafka.tls.caKey | quote }}
{{- if .Values.kafka.tls.certKey }}
- name: ROLLOUT_SSL_CERTFILE
  value: {{ printf "/etc/rollout/kafka-tls/%s" .Values.kafka.tls.certKey | quote }}
{{- end }}
{{- if .Values.kafka.tls.keyKey }}
- name: ROLLOUT_SSL_KEYFILE
  value: {{ printf "/etc/rollout/kafka-tls/%s" .Values.kafka.tls.keyKey | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "rollout.kafkaTlsMount" -}}
{{- if .Values.kafka.tls.enabled }}
- name: kafka-tls
  mountPath: /etc/rollout/kafka-tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "rollout.kafkaTlsVolume" -}}
{{- if .Values.kafka.tls.enabled }}
- name: kafka-tls
  secret:
    secretName: {{ include "rollout.kafkaTlsSecretName" . }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{/* Restart the pods when their configuration changes. */}}
{{- define "rollout.configChecksums" -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/kafka-secret: {{ include (print $.Template.BasePath "/kafka-secret.yaml") . | sha256sum }}
checksum/policies: {{ include (print $.Template.BasePath "/policies.yaml") . | sha256sum }}
{{- end -}}
