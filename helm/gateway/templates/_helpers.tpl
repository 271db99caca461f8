{{/*
Names and labels.
*/}}
{{- define "gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: <release>-<chart> unless the release name already holds it. */}}
{{- define "gateway.fullname" -}}
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

{{- define "gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object of the release carries. */}}
{{- define "gateway.commonLabels" -}}
helm.sh/chart: {{ include "gateway.chart" . }}
app.kubernetes.io/name: {{ include "gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: distillation-gateway
{{- end }}

{{/* The serving pods' labels; the migration Job's pods have another component, so the
Service, the PDB and the HPA never count them. */}}
{{- define "gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "gateway.labels" -}}
{{ include "gateway.commonLabels" . }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gateway.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Secrets. The keys' Secret: secrets.existingSecret, else the one named after the release, which
you create (or which secrets.create makes, for development). The database and Redis URLs are
read from the same Secret unless postgresql/redis.existingSecret name another.
*/}}
{{- define "gateway.secretName" -}}
{{- if and .Values.secrets.create .Values.secrets.existingSecret }}
{{- fail "secrets.create makes the Secret itself: leave secrets.existingSecret empty" }}
{{- end }}
{{- .Values.secrets.existingSecret | default (include "gateway.fullname" .) }}
{{- end }}

{{/* The Secret with the database URL; with hook=true, as seen by the pre-install Job: the
Secret that secrets.create makes does not exist yet then, so the Job gets a hook Secret. */}}
{{- define "gateway.postgresqlSecretName" -}}
{{- $ctx := .ctx }}
{{- if $ctx.Values.postgresql.existingSecret }}
{{- $ctx.Values.postgresql.existingSecret }}
{{- else if and $ctx.Values.secrets.create .hook }}
{{- printf "%s-migrations" (include "gateway.fullname" $ctx) }}
{{- else }}
{{- include "gateway.secretName" $ctx }}
{{- end }}
{{- end }}

{{- define "gateway.redisSecretName" -}}
{{- .Values.redis.existingSecret | default (include "gateway.secretName" .) }}
{{- end }}

{{/*
The environment variables the configuration refers to as ${NAME} (or ${NAME:-default}, which
may be absent), each read from the keys' Secret under secrets.env[NAME], by default NAME in
lower case with dashes (OPENAI_API_KEY -> openai-api-key). Not from there: the database and
Redis URLs (postgresql, redis), extraEnv's names and any NAME that secrets.env maps to "".
As JSON: {NAME: {"secret": ..., "key": ..., "optional": bool}}.
*/}}
{{- define "gateway.secretRefs" -}}
{{- $config := include "gateway.config" . }}
{{- $elsewhere := dict "GATEWAY_DATABASE_URL" true "GATEWAY_REDIS_URL" true }}
{{- range .Values.extraEnv }}
{{- $_ := set $elsewhere .name true }}
{{- end }}
{{- $optionalByName := dict }}
{{- range $ref := regexFindAll "\\$\\{[A-Za-z_][A-Za-z0-9_]*(:-)?" $config -1 }}
{{- $name := $ref | trimPrefix "${" | trimSuffix ":-" }}
{{- $optional := hasSuffix ":-" $ref }}
{{- if hasKey $optionalByName $name }}
{{- $optional = and $optional (get $optionalByName $name) }}
{{- end }}
{{- $_ := set $optionalByName $name $optional }}
{{- end }}
{{- $secret := include "gateway.secretName" . }}
{{- $refs := dict }}
{{- range $name, $optional := $optionalByName }}
{{- if not (hasKey $elsewhere $name) }}
{{- $key := $name | lower | replace "_" "-" }}
{{- if hasKey $.Values.secrets.env $name }}
{{- $key = get $.Values.secrets.env $name }}
{{- end }}
{{- if $key }}
{{- if and $.Values.secrets.create (not $optional) (not (hasKey $.Values.secrets.data $key)) }}
{{- fail (printf "secrets.create: secrets.data has no %q, which the configuration's ${%s} needs" $key $name) }}
{{- end }}
{{- $_ := set $refs $name (dict "secret" $secret "key" $key "optional" $optional) }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $refs }}
{{- end }}

{{/* Environment of the serving pods: keys, database and Redis URLs, all from Secrets. */}}
{{- define "gateway.env" -}}
{{- range $name, $ref := include "gateway.secretRefs" . | fromJson }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.secret }}
      key: {{ $ref.key }}
      {{- if $ref.optional }}
      optional: true
      {{- end }}
{{- end }}
{{- if .Values.postgresql.enabled }}
{{ include "gateway.databaseEnv" (dict "ctx" . "hook" false) }}
{{- end }}
{{- if .Values.redis.enabled }}
- name: GATEWAY_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "gateway.redisSecretName" . }}
      key: {{ .Values.redis.secretKey }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "gateway.databaseEnv" -}}
- name: GATEWAY_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "gateway.postgresqlSecretName" . }}
      key: {{ .ctx.Values.postgresql.secretKey }}
{{- end }}

{{/*
The configuration. Secrets must be ${NAME} references: a literal key or password would land
in a ConfigMap, readable by anyone who may read ConfigMaps, so rendering stops.
*/}}
{{- define "gateway.checkSecretRef" -}}
{{- if and .value (not (regexMatch "^\\$\\{[A-Za-z_][A-Za-z0-9_]*(:-)?\\}$" (toString .value))) }}
{{- fail (printf "config.%s: a secret must not be written in the values; put it in the keys' Secret and write ${NAME} (see secrets in values.yaml)" .path) }}
{{- end }}
{{- end }}

{{- define "gateway.validateConfig" -}}
{{- $config := .config }}
{{- $values := .values }}
{{- range $name, $provider := $config.providers }}
{{- include "gateway.checkSecretRef" (dict "value" (get $provider "api_key") "path" (printf "providers.%s.api_key" $name)) }}
{{- end }}
{{- range $section := list "auth" "admin" }}
{{- $value := get $config $section }}
{{- if kindIs "map" $value }}
{{- range $i, $key := $value.keys }}
{{- include "gateway.checkSecretRef" (dict "value" (get $key "key") "path" (printf "%s.keys[%d].key" $section $i)) }}
{{- end }}
{{- end }}
{{- end }}
{{- $capture := $config.capture | default dict }}
{{- $url := get $capture "database_url" | toString }}
{{- if regexMatch "://[^/@:]+:[^$/@][^/@]*@" $url }}
{{- fail "config.capture.database_url: the password must not be written in the values; use ${GATEWAY_DATABASE_URL} (postgresql.existingSecret)" }}
{{- end }}
{{- $text := toYaml $config }}
{{- if and (contains "${GATEWAY_DATABASE_URL" $text) (not $values.postgresql.enabled) }}
{{- fail "config refers to ${GATEWAY_DATABASE_URL}, which only postgresql.enabled supplies" }}
{{- end }}
{{- if and (contains "${GATEWAY_REDIS_URL" $text) (not $values.redis.enabled) }}
{{- fail "config refers to ${GATEWAY_REDIS_URL}, which only redis.enabled supplies" }}
{{- end }}
{{- end }}

{{/*
gateway.yaml as mounted: the values' config with the listening address forced. With no
providers, the chart's default: OpenAI, and (with no routes either) two routes to it. They are
applied here, not in values.yaml, because Helm merges maps: your routes would be added to
defaults there instead of replacing them.
*/}}
{{- define "gateway.config" -}}
{{- $config := deepCopy .Values.config }}
{{- if not (get $config "providers") }}
{{- $_ := set $config "providers" (dict "openai" (dict "base_url" "https://api.openai.com/v1" "api_key" "${OPENAI_API_KEY}")) }}
{{- if not (get $config "routes") }}
{{- $_ := set $config "routes" (dict
    "gpt-4o" (dict "variants" (dict "teacher" (dict "provider" "openai" "model" "gpt-4o")))
    "gpt-4o-mini" (dict "variants" (dict "student" (dict "provider" "openai" "model" "gpt-4o-mini")))) }}
{{- end }}
{{- end }}
{{- $server := get $config "server" | default dict }}
{{- $_ := set $server "host" "0.0.0.0" }}
{{- $_ := set $server "port" (int .Values.containerPort) }}
{{- $_ := set $config "server" $server }}
{{- if and .Values.redis.enabled (not (get $config "redis")) }}
{{- $_ := set $config "redis" (dict "url" "${GATEWAY_REDIS_URL}") }}
{{- end }}
{{- include "gateway.validateConfig" (dict "config" $config "values" .Values) }}
{{- toYaml $config }}
{{- end }}

{{/* What `gateway db upgrade` reads: only capture.database_url; the rest is the least a
valid configuration holds, so the Job needs no provider, gateway or admin key. */}}
{{- define "gateway.migrationsConfig" -}}
{{- $capture := .Values.config.capture | default dict -}}
auth: none
providers:
  unused:
    base_url: http://127.0.0.1:9/v1
capture:
  database_url: {{ get $capture "database_url" | default "${GATEWAY_DATABASE_URL}" | quote }}
{{- end }}

{{/* /tmp, the only writable path of the gateway's and the Job's pods. */}}
{{- define "gateway.tmpVolume" -}}
- name: tmp
  emptyDir:
    {{- with .Values.tmpVolume.sizeLimit }}
    sizeLimit: {{ . }}
    {{- end }}
{{- end }}

{{/*
Seconds from the pod's deletion until the gateway has surely exited: the preStop sleep; after
SIGTERM config.server.shutdown_delay_s (calls still taken, /readyz 503) and shutdown_timeout_s
(calls in flight; then open streams end with an error event), uvicorn's cancel of what is left
(+5 s, gateway/draining.py STREAM_END_MARGIN_S), shadows (10 s) and the capture queue (20 s +
5 s margin, gateway/app.py and capture/writer.py); plus 5 s for the process to exit.
*/}}
{{- define "gateway.drainSeconds" -}}
{{- $server := .Values.config.server | default dict }}
{{- $delay := 0.0 }}
{{- if hasKey $server "shutdown_delay_s" }}{{ $delay = get $server "shutdown_delay_s" | float64 }}{{ end }}
{{- $timeout := 120.0 }}
{{- if hasKey $server "shutdown_timeout_s" }}{{ $timeout = get $server "shutdown_timeout_s" | float64 }}{{ end }}
{{- $preStop := .Values.preStopSleepSeconds | default 0 | float64 }}
{{- addf $preStop $delay $timeout 5 10 25 5 | ceil | int }}
{{- end }}

{{/* The pods' terminationGracePeriodSeconds: the drain's, or a longer one of the values'. */}}
{{- define "gateway.terminationGracePeriod" -}}
{{- $drain := include "gateway.drainSeconds" . | int }}
{{- $set := .Values.terminationGracePeriodSeconds }}
{{- if kindIs "invalid" $set }}
{{- $drain }}
{{- else if lt (int $set) $drain }}
{{- fail (printf "terminationGracePeriodSeconds %d is shorter than the drain, %d s (preStopSleepSeconds + config.server.shutdown_delay_s + shutdown_timeout_s + 45 s): leave it null to follow the drain" (int $set) $drain) }}
{{- else }}
{{- int $set }}
{{- end }}
{{- end }}
