{{/* The release's full name: every object and the pods' names (and so --instance-id). */}}
{{- define "pageviews.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels that select this release's pods: never change them, a StatefulSet's selector is immutable. */}}
{{- define "pageviews.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pageviews.labels" -}}
{{ include "pageviews.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "pageviews.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "pageviews.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/*
Refuses settings that would deploy something broken, with what to change. Every template
includes it, so `helm template` and `helm install` stop before anything is applied.
*/}}
{{- define "pageviews.validate" -}}
{{- $v := .Values -}}
{{- if not $v.kafka.brokers -}}
{{- fail "kafka.brokers is required: the bootstrap servers, host:port,host:port" -}}
{{- end -}}
{{- if not $v.output -}}
{{- fail "output is required: s3://bucket/prefix, or a path on sharedVolume" -}}
{{- end -}}
{{- if and (not (hasPrefix "s3://" $v.output)) (not $v.sharedVolume.claimName) -}}
{{- fail (printf "output %q is a path: set sharedVolume.claimName to a PersistentVolumeClaim every pod mounts (a pod's own disk would give each instance its own commit log)" $v.output) -}}
{{- end -}}
{{- if and (hasPrefix "s3://" $v.output) $v.sharedVolume.claimName -}}
{{- fail "sharedVolume.claimName is set but output is on S3: leave one of them out" -}}
{{- end -}}
{{- $workers := int $v.workers -}}
{{- $partitions := int $v.kafka.partitions -}}
{{- if lt $workers 1 -}}
{{- fail "workers must be at least 1" -}}
{{- end -}}
{{- if $v.keda.enabled -}}
{{- if gt (mul (int $v.keda.maxReplicaCount) $workers) $partitions -}}
{{- fail (printf "keda.maxReplicaCount %d × workers %d = %d group members, more than the topic's %d partitions (kafka.partitions): the members past it would hold nothing; lower keda.maxReplicaCount" (int $v.keda.maxReplicaCount) $workers (mul (int $v.keda.maxReplicaCount) $workers) $partitions) -}}
{{- end -}}
{{- if gt (int $v.keda.minReplicaCount) (int $v.keda.maxReplicaCount) -}}
{{- fail "keda.minReplicaCount is above keda.maxReplicaCount" -}}
{{- end -}}
{{- if and $v.keda.authSecretKeys (not $v.credentials.secretName) -}}
{{- fail "keda.authSecretKeys names keys of credentials.secretName, which is empty" -}}
{{- end -}}
{{- else if gt (mul (int $v.replicas) $workers) $partitions -}}
{{- fail (printf "replicas %d × workers %d = %d group members, more than the topic's %d partitions (kafka.partitions): the members past it would hold nothing; lower replicas or workers" (int $v.replicas) $workers (mul (int $v.replicas) $workers) $partitions) -}}
{{- end -}}
{{- if and (or $v.credentials.awsKeys $v.credentials.kafkaOptionsKey) (not $v.credentials.secretName) -}}
{{- fail "credentials.awsKeys or credentials.kafkaOptionsKey is set but credentials.secretName is empty" -}}
{{- end -}}
{{- end -}}

{{/* KAFKA_OPTIONS: the plain options, then the Secret's (through the variable set before it). */}}
{{- define "pageviews.kafkaOptions" -}}
{{- $opts := list -}}
{{- range $k, $val := .Values.kafka.options -}}
{{- $opts = append $opts (printf "%s=%v" $k $val) -}}
{{- end -}}
{{- if .Values.credentials.kafkaOptionsKey -}}
{{- $opts = append $opts "$(PAGEVIEWS_SECRET_KAFKA_OPTIONS)" -}}
{{- end -}}
{{- join "," $opts -}}
{{- end -}}
