{{/* The chart's name, or nameOverride. */}}
{{- define "token-rotator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The objects' name: fullnameOverride, the release name when it holds the chart's name, or
<release>-<chart>; 52 characters at most, so that a CronJob's Jobs (name + 11) stay within 63. */}}
{{- define "token-rotator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The full name with a suffix (.suffix), cut so that the whole stays within 52 characters (a
CronJob's limit). Called with (dict "ctx" $ "suffix" "-sharded"). */}}
{{- define "token-rotator.componentName" -}}
{{- $max := sub 52 (len .suffix) | int }}
{{- printf "%s%s" (include "token-rotator.fullname" .ctx | trunc $max | trimSuffix "-") .suffix }}
{{- end }}

{{/* The labels that select the pods. */}}
{{- define "token-rotator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "token-rotator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The labels on the pods and the Jobs a CronJob makes. */}}
{{- define "token-rotator.templateLabels" -}}
{{ include "token-rotator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* The labels on every object the chart renders: the templates' and part-of, as deploy/'s
kustomization adds it. */}}
{{- define "token-rotator.labels" -}}
{{ include "token-rotator.templateLabels" . }}
app.kubernetes.io/part-of: token-rotator
{{- end }}

{{/* The service account's name. */}}
{{- define "token-rotator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "token-rotator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: set the name of an existing service account when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: repository:tag (appVersion by default), then @digest when set; a digest
alone, without a tag, is repository@digest. */}}
{{- define "token-rotator.image" -}}
{{- if and .Values.image.digest (not .Values.image.tag) }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository .Values.image.tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The ConfigMap holding config.yaml: the chart's, or existingConfigMap. */}}
{{- define "token-rotator.configMapName" -}}
{{- default (include "token-rotator.fullname" .) .Values.existingConfigMap }}
{{- end }}

{{/* The container's arguments for this mode. */}}
{{- define "token-rotator.args" -}}
{{- $args := list "--config" "/etc/token-rotator/config.yaml" }}
{{- if eq .Values.mode "daemon" }}
{{- $args = concat $args (list "--metrics-address" (printf ":%d" (int .Values.metrics.port))) }}
{{- else }}
{{- $args = append $args "--once" }}
{{- if eq .Values.mode "sharded" }}
{{- $args = concat $args (list "--shard" (printf "/%d" (int .Values.shards))) }}
{{- end }}
{{- if .Values.metrics.pushgateway }}
{{- $args = concat $args (list "--pushgateway" .Values.metrics.pushgateway) }}
{{- end }}
{{- end }}
{{- $args = concat $args (list "--log-format" "json") .Values.extraArgs }}
{{- toJson $args }}
{{- end }}

{{/* The pod spec every mode shares; .restartPolicy is set by the caller's context. */}}
{{- define "token-rotator.podSpec" -}}
serviceAccountName: {{ include "token-rotator.serviceAccountName" . }}
automountServiceAccountToken: false
{{- if ne .Values.mode "daemon" }}
restartPolicy: Never
{{- end }}
terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
{{- with concat .Values.imagePullSecrets (dig "imagePullSecrets" list (default dict .Values.global)) | uniq }}
imagePullSecrets: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
securityContext: {{- toYaml .Values.podSecurityContext | nindent 2 }}
containers:
  - name: token-rotator
    image: {{ include "token-rotator.image" . }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    args: {{ include "token-rotator.args" . }}
    env:
      - {name: VAULT_ADDR, value: {{ .Values.vault.address | quote }}}
      {{- if .Values.vault.caCert.secretName }}
      - {name: VAULT_CACERT, value: {{ printf "/etc/vault-ca/%s" .Values.vault.caCert.key | quote }}}
      {{- end }}
      {{- with .Values.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- if eq .Values.mode "daemon" }}
    ports:
      - {name: metrics, containerPort: {{ .Values.metrics.port }}, protocol: TCP}
    livenessProbe:
      httpGet: {path: /healthz, port: metrics}
      initialDelaySeconds: 5
      periodSeconds: 20
      timeoutSeconds: 5
      failureThreshold: 3
    readinessProbe:
      httpGet: {path: /readyz, port: metrics}
      periodSeconds: 10
      timeoutSeconds: 5
      failureThreshold: 3
    {{- end }}
    resources: {{- toYaml .Values.resources | nindent 6 }}
    securityContext: {{- toYaml .Values.securityContext | nindent 6 }}
    volumeMounts:
      - {name: config, mountPath: /etc/token-rotator, readOnly: true}
      - {name: vault-token, mountPath: /var/run/secrets/vault, readOnly: true}
      {{- if .Values.vault.caCert.secretName }}
      - {name: vault-ca, mountPath: /etc/vault-ca, readOnly: true}
      {{- end }}
      {{- with .Values.extraVolumeMounts }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
volumes:
  - name: config
    configMap: {name: {{ include "token-rotator.configMapName" . }}}
  - name: vault-token
    projected:
      sources:
        - serviceAccountToken:
            path: token
            audience: {{ .Values.vault.serviceAccountToken.audience }}
            expirationSeconds: {{ .Values.vault.serviceAccountToken.expirationSeconds }}
  {{- if .Values.vault.caCert.secretName }}
  - name: vault-ca
    secret: {secretName: {{ .Values.vault.caCert.secretName }}}
  {{- end }}
  {{- with .Values.extraVolumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* The pod template's metadata. The daemon's pods carry the checksum of the config the chart
renders, so that `helm upgrade` with another config restarts the daemon, which reads its config
once; a CronJob's pods read it at each run. */}}
{{- define "token-rotator.podMetadata" -}}
labels:
  {{- include "token-rotator.templateLabels" . | nindent 2 }}
  {{- with .Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- $annotations := deepCopy .Values.podAnnotations }}
{{- if and (eq .Values.mode "daemon") (not .Values.existingConfigMap) }}
{{- $_ := set $annotations "checksum/config" (include (print $.Template.BasePath "/configmap.yaml") . | sha256sum) }}
{{- end }}
{{- with $annotations }}
annotations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The CronJob spec both CronJob modes share, above the Job spec. */}}
{{- define "token-rotator.cronJobSpec" -}}
schedule: {{ .Values.schedule | quote }}
timeZone: {{ .Values.timeZone }}
concurrencyPolicy: Forbid
startingDeadlineSeconds: {{ .Values.cronjob.startingDeadlineSeconds }}
successfulJobsHistoryLimit: {{ .Values.cronjob.successfulJobsHistoryLimit }}
failedJobsHistoryLimit: {{ .Values.cronjob.failedJobsHistoryLimit }}
{{- end }}
