{{/*
Named helpers shared by every template. Templates range over .Values.services and call these
with (dict "root" $ "service" <name>), so no template is copied per service.
*/}}

{{- define "careloop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "careloop.fullname" -}}
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

{{- define "careloop.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Name of a service's Deployment, Service, ConfigMap and ServiceAccount. */}}
{{- define "careloop.serviceName" -}}
{{- printf "%s-%s" (include "careloop.fullname" .root) .service | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select one component's pods; never change them (selectors are immutable). */}}
{{- define "careloop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "careloop.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .service }}
{{- end }}

{{- define "careloop.labels" -}}
{{ include "careloop.selectorLabels" . }}
app.kubernetes.io/part-of: careloop
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ include "careloop.chart" .root }}
{{- end }}

{{/* Labels of every pod of the release, whatever its component (default-deny selector). */}}
{{- define "careloop.releaseSelector" -}}
app.kubernetes.io/name: {{ include "careloop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "careloop.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Names of the enabled services, sorted, as a JSON list (fromJsonArray to use). */}}
{{- define "careloop.enabledServices" -}}
{{- $names := list }}
{{- range $name, $svc := .Values.services }}
{{- if $svc.enabled }}
{{- $names = append $names $name }}
{{- end }}
{{- end }}
{{- $names | sortAlpha | toJson }}
{{- end }}

{{/* In-cluster base URL of a service, from this release's own Service name. */}}
{{- define "careloop.serviceUrl" -}}
{{- $port := (get .root.Values.services .service).port }}
{{- printf "%s://%s:%v" (include "careloop.scheme" .root) (include "careloop.serviceName" .) $port }}
{{- end }}

{{/* Scheme, and name of the Service port, of the services' own API. */}}
{{- define "careloop.scheme" -}}
{{- if .Values.serviceTls.enabled }}https{{ else }}http{{ end }}
{{- end }}

{{/* TLS Secret of one service's HTTPS listener. */}}
{{- define "careloop.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "careloop.serviceName" .)) (get .root.Values.serviceTls.secrets .service) }}
{{- end }}

{{/* Refuse value combinations that render a platform that cannot work. */}}
{{- define "careloop.validate" -}}
{{- $enabled := include "careloop.enabledServices" . | fromJsonArray }}
{{- if and (gt (len $enabled) 0) (not (has "identity" $enabled)) }}
{{- fail "services.identity.enabled: every service verifies tokens against identity's JWKS; enable identity" }}
{{- end }}
{{- if and (has "messaging" $enabled) (not (has "patients" $enabled)) }}
{{- fail "services.messaging.enabled needs services.patients.enabled (messaging reads contact data from patients)" }}
{{- end }}
{{- if and (has "caregaps" $enabled) (not (has "patients" $enabled)) }}
{{- fail "services.caregaps.enabled needs services.patients.enabled (caregaps reads demographics from patients)" }}
{{- end }}
{{- if and (eq .Values.environment "production") (not (hasPrefix "https://" .Values.publicUrl)) }}
{{- fail "publicUrl must use https:// in production (messaging's secure links are built from it)" }}
{{- end }}
{{- if and (eq .Values.environment "production") (not .Values.serviceTls.enabled) }}
{{- fail "serviceTls.enabled: production refuses a plain-HTTP listener" }}
{{- end }}
{{- if and (eq .Values.environment "production") (not (hasPrefix "https://" .Values.vault.addr)) }}
{{- fail "vault.addr must use https:// in production" }}
{{- end }}
{{- if and (eq .Values.environment "production") (eq .Values.kafka.securityProtocol "PLAINTEXT") }}
{{- fail "kafka.securityProtocol must be SSL or SASL_SSL in production" }}
{{- end }}
{{- end }}

{{/* Directory a service reads its secret settings from (CARELOOP_SECRETS_DIR). */}}
{{- define "careloop.secretsDir" -}}
{{- if eq .Values.vault.secrets.mode "vault-agent" }}/vault/secrets{{ else }}/var/run/secrets/careloop{{ end }}
{{- end }}

{{- define "careloop.vaultTokenFile" -}}
{{- if eq .Values.vault.secrets.mode "vault-agent" }}/vault/secrets/token{{ else }}/var/run/secrets/careloop/vault-token{{ end }}
{{- end }}

{{/* Secret items of one service (list of {file, path, key}) as JSON. */}}
{{- define "careloop.secretItems" -}}
{{- $items := .root.Values.vault.secrets.items }}
{{- concat (default (list) $items.all) (default (list) (get $items .service)) | toJson }}
{{- end }}

{{/* Name of the Kubernetes Secret mounted as the secrets dir (external-secrets, existing-secret). */}}
{{- define "careloop.secretName" -}}
{{- $default := printf "%s-secrets" (include "careloop.serviceName" .) }}
{{- if eq .root.Values.vault.secrets.mode "existing-secret" }}
{{- default $default (get .root.Values.vault.secrets.existingSecrets .service) }}
{{- else }}
{{- $default }}
{{- end }}
{{- end }}

{{/*
Non-secret settings of one service as a YAML map of env var -> string. The ConfigMap holds
them, the Deployment reads each by name, and the migration Job (a hook that runs before the
ConfigMap exists) gets the same values inline.
*/}}
{{- define "careloop.settings" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $svc := get $v.services .service }}
{{- $enabled := include "careloop.enabledServices" $root | fromJsonArray }}
{{- $identity := include "careloop.serviceUrl" (dict "root" $root "service" "identity") }}
{{- $s := dict }}
{{- $_ := set $s "CARELOOP_ENVIRONMENT" $v.environment }}
{{- $_ = set $s "CARELOOP_HTTP_HOST" "0.0.0.0" }}
{{- $_ = set $s "CARELOOP_HTTP_PORT" (toString $svc.port) }}
{{- if $v.serviceTls.enabled }}
{{- $_ = set $s "CARELOOP_HTTP_TLS_CERTFILE" (printf "%s/tls.crt" $v.serviceTls.mountPath) }}
{{- $_ = set $s "CARELOOP_HTTP_TLS_KEYFILE" (printf "%s/tls.key" $v.serviceTls.mountPath) }}
{{- if $v.serviceTls.caConfigMap.name }}
{{- $_ = set $s "CARELOOP_INTERNAL_CA_FILE" (printf "%s/%s" $v.serviceTls.caFile $v.serviceTls.caConfigMap.key) }}
{{- else }}
{{- $_ = set $s "CARELOOP_INTERNAL_CA_FILE" (printf "%s/ca.crt" $v.serviceTls.mountPath) }}
{{- end }}
{{- end }}
{{- $_ = set $s "CARELOOP_LOG_LEVEL" $v.logLevel }}
{{- $_ = set $s "CARELOOP_LOG_JSON" (toString $v.logJson) }}
{{- $_ = set $s "CARELOOP_KAFKA_BOOTSTRAP" $v.kafka.bootstrap }}
{{- $_ = set $s "CARELOOP_KAFKA_SECURITY_PROTOCOL" $v.kafka.securityProtocol }}
{{- $_ = set $s "CARELOOP_KAFKA_REPLICATION_FACTOR" (toString $v.kafka.replicationFactor) }}
{{- if $v.kafka.caConfigMap.name }}
{{- $_ = set $s "CARELOOP_KAFKA_SSL_CAFILE" (printf "%s/%s" $v.kafka.caFile $v.kafka.caConfigMap.key) }}
{{- end }}
{{- if $v.kafka.topicPrefix }}
{{- $_ = set $s "CARELOOP_TOPIC_PREFIX" $v.kafka.topicPrefix }}
{{- end }}
{{- $_ = set $s "CARELOOP_VAULT_ADDR" $v.vault.addr }}
{{- if $v.vault.caConfigMap.name }}
{{- $_ = set $s "CARELOOP_VAULT_CA_CERT" (printf "%s/%s" $v.vault.caFile $v.vault.caConfigMap.key) }}
{{- end }}
{{- $_ = set $s "CARELOOP_VAULT_TOKEN_FILE" (include "careloop.vaultTokenFile" $root) }}
{{- $_ = set $s "CARELOOP_SECRETS_DIR" (include "careloop.secretsDir" $root) }}
{{- $_ = set $s "CARELOOP_AUTH_JWKS_URL" (printf "%s/.well-known/jwks.json" $identity) }}
{{- if $v.otel.endpoint }}
{{- $_ = set $s "CARELOOP_OTEL_EXPORTER_OTLP_ENDPOINT" $v.otel.endpoint }}
{{- end }}
{{- if $v.database.sslMode }}
{{- $_ = set $s "PGSSLMODE" $v.database.sslMode }}
{{- end }}
{{- if $v.database.caConfigMap.name }}
{{- $_ = set $s "PGSSLROOTCERT" (printf "%s/%s" $v.database.caFile $v.database.caConfigMap.key) }}
{{- end }}
{{- if eq .service "gateway" }}
{{- $routes := dict }}
{{- range $name := $enabled }}
{{- if ne $name "gateway" }}
{{- $_ = set $routes $name (include "careloop.serviceUrl" (dict "root" $root "service" $name)) }}
{{- end }}
{{- end }}
{{- $_ = set $s "CARELOOP_ROUTES" ($routes | toJson) }}
{{- end }}
{{- if eq .service "caregaps" }}
{{- $_ = set $s "CARELOOP_PATIENTS_URL" (include "careloop.serviceUrl" (dict "root" $root "service" "patients")) }}
{{- $_ = set $s "CARELOOP_IDENTITY_TOKEN_URL" (printf "%s/oauth/token" $identity) }}
{{- end }}
{{- if eq .service "messaging" }}
{{- $_ = set $s "CARELOOP_PATIENTS_URL" (include "careloop.serviceUrl" (dict "root" $root "service" "patients")) }}
{{- $_ = set $s "CARELOOP_IDENTITY_TOKEN_URL" (printf "%s/oauth/token" $identity) }}
{{- $_ = set $s "CARELOOP_SECURE_LINK_BASE" (printf "%s/api/v1/messaging/links" (trimSuffix "/" $v.publicUrl)) }}
{{- /* Twilio signs the exact URL it calls: the gateway's public callback routes. */}}
{{- $_ = set $s "CARELOOP_TWILIO_STATUS_CALLBACK_URL" (printf "%s/api/v1/messaging/webhooks/twilio/status" (trimSuffix "/" $v.publicUrl)) }}
{{- $_ = set $s "CARELOOP_TWILIO_INBOUND_URL" (printf "%s/api/v1/messaging/webhooks/twilio/inbound" (trimSuffix "/" $v.publicUrl)) }}
{{- end }}
{{- range $key, $value := $svc.env }}
{{- $_ = set $s $key (toString $value) }}
{{- end }}
{{- toYaml $s }}
{{- end }}

{{/* Settings of one service as an inline env list (Jobs). */}}
{{- define "careloop.inlineEnv" -}}
{{- range $key, $value := include "careloop.settings" . | fromYaml }}
- name: {{ $key }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}

{{/* Vault Agent Injector annotations of a service's pods (Deployment or migration Job). */}}
{{- define "careloop.vaultAgentAnnotations" -}}
{{- $v := .root.Values }}
{{- $secrets := $v.vault.secrets }}
vault.hashicorp.com/agent-inject: "true"
vault.hashicorp.com/role: {{ printf "%s%s" $secrets.vaultAgent.rolePrefix .service | quote }}
vault.hashicorp.com/agent-inject-token: "true"
vault.hashicorp.com/service: {{ $v.vault.addr | quote }}
{{- if $secrets.vaultAgent.authPath }}
vault.hashicorp.com/auth-path: {{ $secrets.vaultAgent.authPath | quote }}
{{- end }}
{{- if $secrets.vaultAgent.tlsSecret }}
vault.hashicorp.com/tls-secret: {{ $secrets.vaultAgent.tlsSecret | quote }}
vault.hashicorp.com/ca-cert: "/vault/tls/ca.crt"
{{- end }}
{{- if .job }}
vault.hashicorp.com/agent-pre-populate-only: "true"
{{- end }}
{{- range $item := include "careloop.secretItems" . | fromJsonArray }}
{{- $path := printf "%s/data/%s/%s/%s" $secrets.kvMount $secrets.pathPrefix $.service $item.path }}
vault.hashicorp.com/agent-inject-secret-{{ $item.file }}: {{ $path | quote }}
vault.hashicorp.com/agent-inject-template-{{ $item.file }}: {{ printf "{{- with secret %q -}}{{ .Data.data.%s }}{{- end -}}" $path $item.key | quote }}
{{- end }}
{{- with $secrets.vaultAgent.extraAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod-level security context shared by every pod of the chart. */}}
{{- define "careloop.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "careloop.containerSecurityContext" -}}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
capabilities:
  drop:
    - ALL
{{- end }}

{{/* Volume mounts for /tmp, the CA bundles and (Secret modes) the secrets dir. */}}
{{- define "careloop.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.caConfigMap.name }}
- name: kafka-ca
  mountPath: {{ .Values.kafka.caFile }}
  readOnly: true
{{- end }}
{{- if .Values.vault.caConfigMap.name }}
- name: vault-ca
  mountPath: {{ .Values.vault.caFile }}
  readOnly: true
{{- end }}
{{- if .Values.database.caConfigMap.name }}
- name: db-ca
  mountPath: {{ .Values.database.caFile }}
  readOnly: true
{{- end }}
{{- if ne .Values.vault.secrets.mode "vault-agent" }}
- name: secrets
  mountPath: /var/run/secrets/careloop
  readOnly: true
{{- end }}
{{- if .Values.serviceTls.enabled }}
- name: service-tls
  mountPath: {{ .Values.serviceTls.mountPath }}
  readOnly: true
{{- if .Values.serviceTls.caConfigMap.name }}
- name: internal-ca
  mountPath: {{ .Values.serviceTls.caFile }}
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{- define "careloop.volumes" -}}
{{- $v := .root.Values }}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- if $v.kafka.caConfigMap.name }}
- name: kafka-ca
  configMap:
    name: {{ $v.kafka.caConfigMap.name }}
    items:
      - key: {{ $v.kafka.caConfigMap.key }}
        path: {{ $v.kafka.caConfigMap.key }}
{{- end }}
{{- if $v.vault.caConfigMap.name }}
- name: vault-ca
  configMap:
    name: {{ $v.vault.caConfigMap.name }}
    items:
      - key: {{ $v.vault.caConfigMap.key }}
        path: {{ $v.vault.caConfigMap.key }}
{{- end }}
{{- if $v.database.caConfigMap.name }}
- name: db-ca
  configMap:
    name: {{ $v.database.caConfigMap.name }}
    items:
      - key: {{ $v.database.caConfigMap.key }}
        path: {{ $v.database.caConfigMap.key }}
{{- end }}
{{- if ne $v.vault.secrets.mode "vault-agent" }}
- name: secrets
  secret:
    secretName: {{ include "careloop.secretName" . }}
    defaultMode: 0440
{{- end }}
{{- if $v.serviceTls.enabled }}
- name: service-tls
  secret:
    secretName: {{ include "careloop.tlsSecretName" . }}
    defaultMode: 0440
    {{- if .job }}
    # A hook Job may run before the certificate is issued; it never serves, it only needs
    # the service's settings to validate.
    optional: true
    {{- end }}
{{- if $v.serviceTls.caConfigMap.name }}
- name: internal-ca
  configMap:
    name: {{ $v.serviceTls.caConfigMap.name }}
    items:
      - key: {{ $v.serviceTls.caConfigMap.key }}
        path: {{ $v.serviceTls.caConfigMap.key }}
{{- end }}
{{- end }}
{{- end }}

{{/* NetworkPolicy egress rules every service and migration Job needs (DNS, Vault, PostgreSQL). */}}
{{- define "careloop.egressDns" -}}
- to:
    {{- toYaml .Values.networkPolicy.dns | nindent 4 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}

{{/* One egress rule to a configured peer set (peers empty: any destination on the ports). */}}
{{- define "careloop.egressTo" -}}
{{- if .peers }}
- to:
    {{- toYaml .peers | nindent 4 }}
  ports:
{{- else }}
- ports:
{{- end }}
    {{- toYaml .ports | nindent 4 }}
{{- end }}
