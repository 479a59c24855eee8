{{/* Chart name. */}}
{{- define "pcf-api.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: release name, plus the chart name unless the release name contains it. */}}
{{- define "pcf-api.fullname" -}}
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

{{- define "pcf-api.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pcf-api.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pcf-api.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "pcf-api.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pcf-api
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "pcf-api.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pcf-api.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "pcf-api.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The merged settings: config with extraConfig over it. */}}
{{- define "pcf-api.settings" -}}
{{- toYaml (mergeOverwrite (deepCopy .Values.config) (deepCopy .Values.extraConfig)) -}}
{{- end -}}

{{/* PCF_ environment variables (name: value) for the non-secret settings; empty values left out. */}}
{{- define "pcf-api.configData" -}}
{{- $settings := include "pcf-api.settings" . | fromYaml -}}
{{- range $section, $value := $settings }}
{{- if kindIs "map" $value }}
{{- range $key, $item := $value }}
{{- $text := ternary (join "," $item) (toString $item) (kindIs "slice" $item) }}
{{- if and (not (kindIs "invalid" $item)) (ne $text "") (not (and (eq $section "metrics") (eq $key "port") (eq $text "0"))) }}
{{ printf "PCF_%s__%s" (upper $section) (upper $key) }}: {{ $text | quote }}
{{- end }}
{{- end }}
{{- else if and (not (kindIs "invalid" $value)) (ne (toString $value) "") }}
{{ printf "PCF_%s" (upper $section) }}: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The secret keys: values key → (file name, setting). Only enabled ones are used. */}}
{{- define "pcf-api.secretCatalog" -}}
databaseUrl: {file: database-url, env: PCF_DATABASE__URL}
databasePassword: {file: database-password, env: PCF_DATABASE__PASSWORD}
hs256Secret: {file: hs256-secret, env: PCF_AUTH__HS256_SECRET}
spicedbPresharedKey: {file: spicedb-preshared-key, env: PCF_AUTHZ__SPICEDB_PRESHARED_KEY}
metricsPassword: {file: metrics-password, env: PCF_METRICS__PASSWORD}
eventsRedisUrl: {file: events-redis-url, env: PCF_EVENTS__REDIS_URL}
rateLimitStorageUrl: {file: rate-limit-storage-url, env: PCF_RATE_LIMIT__STORAGE_URL}
tracingHeaders: {file: tracing-headers, env: PCF_TRACING__HEADERS}
logHashKey: {file: log-hash-key, env: PCF_LOG__HASH_KEY}
{{- end -}}

{{/* Enabled secret keys, as a YAML map like secretCatalog. */}}
{{- define "pcf-api.secretKeys" -}}
{{- $catalog := include "pcf-api.secretCatalog" . | fromYaml -}}
{{- $enabled := dict -}}
{{- range $key, $entry := $catalog -}}
{{- if index $.Values.secrets.keys $key -}}
{{- $_ := set $enabled $key $entry -}}
{{- end -}}
{{- end -}}
{{- toYaml $enabled -}}
{{- end -}}

{{/* Name of the Kubernetes Secret the pods read (not used with Vault). */}}
{{- define "pcf-api.secretName" -}}
{{- default (include "pcf-api.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Whether the chart renders the Secret itself. */}}
{{- define "pcf-api.createSecret" -}}
{{- if and .Values.secrets.create (not .Values.secrets.existingSecret) (not .Values.vault.enabled) (not .Values.externalSecret.enabled) -}}true{{- end -}}
{{- end -}}

{{/* Data of the chart-managed Secret (base64). The HS256 secret, when not given, is kept from the
     Secret already in the cluster, else generated. */}}
{{- define "pcf-api.secretData" -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "pcf-api.fullname" .) -}}
{{- $keys := include "pcf-api.secretKeys" . | fromYaml -}}
{{- range $key, $entry := $keys }}
{{- $value := index $.Values.secrets.values $key | default "" -}}
{{- if and (eq $key "hs256Secret") (eq $value "") -}}
{{- if and $existing (hasKey $existing.data $entry.file) -}}
{{- $value = index $existing.data $entry.file | b64dec -}}
{{- else -}}
{{- $value = randAlphaNum 48 -}}
{{- end -}}
{{- end }}
{{- if eq $value "" }}
{{- fail (printf "secrets.values.%s is empty but secrets.keys.%s is on: set it, or use secrets.existingSecret" $key $key) }}
{{- end }}
{{ $entry.file }}: {{ $value | b64enc | quote }}
{{- end }}
{{- end -}}

{{/* Seconds: drain + shutdown + margin, rounded up; or the value given, checked. */}}
{{- define "pcf-api.terminationGracePeriodSeconds" -}}
{{- $server := (include "pcf-api.settings" . | fromYaml).server | default dict -}}
{{- $drain := float64 (default 5 $server.drain_seconds) -}}
{{- $shutdown := float64 (default 30 $server.shutdown_timeout) -}}
{{- $minimum := addf $drain $shutdown -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- ceil (addf $minimum .Values.terminationMarginSeconds) | int -}}
{{- else -}}
{{- if le (float64 .Values.terminationGracePeriodSeconds) $minimum -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed server.drain_seconds + server.shutdown_timeout (%v)" .Values.terminationGracePeriodSeconds $minimum) -}}
{{- end -}}
{{- .Values.terminationGracePeriodSeconds | int -}}
{{- end -}}
{{- end -}}

{{/* Port numbers. */}}
{{- define "pcf-api.httpPort" -}}
{{- (include "pcf-api.settings" . | fromYaml).server.port | default 8080 | int -}}
{{- end -}}
{{- define "pcf-api.metricsPort" -}}
{{- $metrics := (include "pcf-api.settings" . | fromYaml).metrics | default dict -}}
{{- if and $metrics.port (ne (toString $metrics.port) "0") -}}{{- $metrics.port | int -}}{{- end -}}
{{- end -}}

{{/* Vault Agent Injector annotations: one rendered file per enabled key. */}}
{{- define "pcf-api.vaultAnnotations" -}}
vault.hashicorp.com/agent-inject: "true"
vault.hashicorp.com/role: {{ .Values.vault.role | quote }}
vault.hashicorp.com/secret-volume-path: {{ .Values.secrets.mountPath | quote }}
vault.hashicorp.com/agent-service-account-token-volume-name: vault-token
vault.hashicorp.com/agent-run-as-user: "65532"
vault.hashicorp.com/agent-run-as-group: "65532"
{{- $keys := include "pcf-api.secretKeys" . | fromYaml }}
{{- range $key, $entry := $keys }}
vault.hashicorp.com/agent-inject-secret-{{ $entry.file }}: {{ $.Values.vault.secretPath | quote }}
vault.hashicorp.com/agent-inject-template-{{ $entry.file }}: {{ printf "{{- with secret %q -}}{{ index .Data.data %q }}{{- end -}}" $.Values.vault.secretPath $entry.file | quote }}
{{- end }}
{{- with .Values.vault.annotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Environment variables that point the app at its secrets (files) or carry them (env). */}}
{{- define "pcf-api.secretEnv" -}}
{{- $keys := include "pcf-api.secretKeys" . | fromYaml -}}
{{- range $key, $entry := $keys }}
{{- if or $.Values.vault.enabled (eq $.Values.secrets.mountAs "file") }}
- name: {{ $entry.env }}_FILE
  value: {{ printf "%s/%s" $.Values.secrets.mountPath $entry.file | quote }}
{{- else }}
- name: {{ $entry.env }}
  valueFrom:
    secretKeyRef:
      name: {{ $.secretName | default (include "pcf-api.secretName" $) }}
      key: {{ $entry.file }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Whether secrets come as a mounted Kubernetes Secret volume. */}}
{{- define "pcf-api.secretVolume" -}}
{{- if and (not .Values.vault.enabled) (eq .Values.secrets.mountAs "file") (include "pcf-api.secretKeys" . | fromYaml) -}}true{{- end -}}
{{- end -}}

{{/* Labels that select the API pods only (not the migration Job's or the test pod). */}}
{{- define "pcf-api.podSelectorLabels" -}}
{{ include "pcf-api.selectorLabels" . }}
app.kubernetes.io/component: api
{{- end -}}

{{/* checkov exceptions, each justified (tests/deploy/helm runs checkov on the rendered output). */}}
{{- define "pcf-api.checkovSkips" -}}
checkov.io/skip1: "CKV_K8S_15=Image references are immutable (release tag or digest): pull policy Always would only make every pod start depend on the registry"
{{- if not .Values.image.digest }}
checkov.io/skip2: "CKV_K8S_43=Digest pinning is image.digest; the tag default exists because the digest is known only after the image build"
{{- end }}
{{- if and (eq .Values.secrets.mountAs "env") (not .Values.vault.enabled) }}
checkov.io/skip5: "CKV_K8S_35=secrets.mountAs env is an explicit opt-in; the default mounts the secrets as files"
{{- end }}
{{- end -}}
