{{/* Names and labels. */}}
{{- define "proxymage.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "proxymage.fullname" -}}
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

{{- define "proxymage.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "proxymage.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: proxymage
{{- end -}}

{{/* Selector labels of one service: (dict "root" $ "service" "study-fetcher"). */}}
{{- define "proxymage.selectorLabels" -}}
app.kubernetes.io/name: {{ include "proxymage.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .service }}
{{- end -}}

{{- define "proxymage.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "proxymage.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The image of one service: (dict "root" $ "service" name "spec" serviceValues). */}}
{{- define "proxymage.image" -}}
{{- if .spec.image -}}
{{- .spec.image -}}
{{- else -}}
{{- printf "%s-%s:%s" .root.Values.image.repository .service (default .root.Chart.AppVersion .root.Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The topics each service consumes (the subscribe calls of its app.py), for the KEDA triggers. */}}
{{- define "proxymage.subscriptions" -}}
identity-matcher: [dcc.patient-enrolled.v1, dcc.enrolment-withdrawn.v1, dcc.imaging-refresh.v1]
study-fetcher: [identity.resolved.v1, dcc.imaging-refresh.v1, dcc.studies-selected.v1, dcc.study-removed.v1]
{{- end -}}

{{/* Kafka client settings from values, as container env entries (the services and the topics Job). */}}
{{- define "proxymage.kafkaEnv" -}}
- name: PROXYMAGE_KAFKA_BOOTSTRAP_SERVERS
  value: {{ .Values.kafka.bootstrapServers | quote }}
- name: PROXYMAGE_KAFKA_SECURITY__PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
- name: PROXYMAGE_TOPIC_PREFIX
  value: {{ .Values.config.topicPrefix | quote }}
- name: PROXYMAGE_TOPIC_PARTITIONS
  value: {{ .Values.config.topicPartitions | quote }}
- name: PROXYMAGE_TOPIC_REPLICATION_FACTOR
  value: {{ .Values.kafka.replicationFactor | quote }}
{{- /* The topics Job creates the topics; a service then only checks nothing is missing at its first use. */}}
- name: PROXYMAGE_CREATE_TOPICS_AT_START
  value: {{ (not .Values.topicsJob.enabled) | quote }}
{{- if .Values.kafka.sasl.mechanism }}
- name: PROXYMAGE_KAFKA_SECURITY__SASL_MECHANISM
  value: {{ .Values.kafka.sasl.mechanism | quote }}
- name: PROXYMAGE_KAFKA_SECURITY__SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ required "kafka.sasl.existingSecret is required with kafka.sasl.mechanism" .Values.kafka.sasl.existingSecret }}
      key: username
- name: PROXYMAGE_KAFKA_SECURITY__SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.existingSecret }}
      key: password
{{- end }}
{{- if .Values.kafka.tls.caSecret }}
- name: PROXYMAGE_KAFKA_SECURITY__SSL_CAFILE
  value: /etc/proxymage/kafka/ca.crt
{{- end }}
{{- end -}}
