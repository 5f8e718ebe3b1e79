{{/* Base name of every resource: release "zexec" of chart "zexec" gives "zexec". */}}
{{- define "zexec.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "zexec.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of cluster-scoped objects: unique per release namespace. */}}
{{- define "zexec.clusterName" -}}
{{- printf "%s-%s-deploy-api" .Release.Namespace (include "zexec.fullname" .) -}}
{{- end -}}

{{/* The per-user ClusterRole, bound only by RoleBindings in user namespaces. */}}
{{- define "zexec.userRoleName" -}}
{{- printf "%s-user" (include "zexec.clusterName" .) -}}
{{- end -}}

{{- define "zexec.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "zexec.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: zexec
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "broker"). */}}
{{- define "zexec.selectorLabels" -}}
app.kubernetes.io/name: {{ include "zexec.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "zexec.componentLabels" -}}
{{ include "zexec.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The apps image: by digest when image.digest is set (immutable), else by tag. */}}
{{- define "zexec.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "zexec.brokerName" -}}{{ include "zexec.fullname" . }}-broker{{- end -}}
{{- define "zexec.deployApiName" -}}{{ include "zexec.fullname" . }}-deploy-api{{- end -}}
{{- define "zexec.epApiName" -}}{{ include "zexec.fullname" . }}-ep-api{{- end -}}

{{- define "zexec.serverSecretName" -}}
{{- default (include "zexec.brokerName" .) .Values.broker.serverSecret.existingSecret -}}
{{- end -}}

{{- define "zexec.adminTokenSecretName" -}}
{{- default (printf "%s-control" (include "zexec.brokerName" .)) .Values.broker.adminToken.existingSecret -}}
{{- end -}}

{{- define "zexec.deployApiServiceAccount" -}}
{{- if .Values.deployApi.serviceAccount.create -}}
{{- default (include "zexec.deployApiName" .) .Values.deployApi.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.deployApi.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* In-cluster DNS name of the internal broker Service. */}}
{{- define "zexec.brokerInternalHost" -}}
{{- printf "%s.%s.svc" (include "zexec.brokerName" .) .Release.Namespace -}}
{{- end -}}

{{- define "zexec.brokerBackendUrl" -}}
{{- if .Values.deployApi.kubernetes.brokerBackendUrl -}}
{{- .Values.deployApi.kubernetes.brokerBackendUrl -}}
{{- else -}}
{{- printf "tcp://%s:%v" (include "zexec.brokerInternalHost" .) .Values.broker.ports.backend -}}
{{- end -}}
{{- end -}}

{{/* Labels selecting the broker pod, as "k=v,k=v" (ZEXEC_K8S_BROKER_POD_LABELS). */}}
{{/* A label map as k=v,... sorted by key (the ZEXEC_K8S_*_POD_LABELS format). */}}
{{- define "zexec.labelList" -}}
{{- $pairs := list -}}
{{- range $k := keys . | sortAlpha -}}
{{- $pairs = append $pairs (printf "%s=%v" $k (index $ $k)) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{- define "zexec.brokerPodLabelsCsv" -}}
{{- $labels := include "zexec.selectorLabels" (dict "ctx" . "component" "broker") | fromYaml -}}
{{- $pairs := list -}}
{{- range $k := keys $labels | sortAlpha -}}
{{- $pairs = append $pairs (printf "%s=%s" $k (index $labels $k)) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{- define "zexec.brokerExternalHost" -}}
{{- default .Values.ingress.host .Values.broker.external.host -}}
{{- end -}}

{{- define "zexec.brokerExternalPort" -}}
{{- $svc := .Values.broker.service -}}
{{- if not (kindIs "invalid" .Values.broker.external.port) -}}
{{- .Values.broker.external.port -}}
{{- else if and (eq $svc.type "NodePort") (not (kindIs "invalid" $svc.nodePort)) -}}
{{- $svc.nodePort -}}
{{- else -}}
{{- $svc.port -}}
{{- end -}}
{{- end -}}

{{- define "zexec.brokerExternalSecurePort" -}}
{{- $svc := .Values.broker.service -}}
{{- if not (kindIs "invalid" .Values.broker.external.securePort) -}}
{{- .Values.broker.external.securePort -}}
{{- else if and (eq $svc.type "NodePort") (not (kindIs "invalid" $svc.secureNodePort)) -}}
{{- $svc.secureNodePort -}}
{{- else -}}
{{- .Values.broker.ports.secure -}}
{{- end -}}
{{- end -}}

{{- define "zexec.tlsSecretName" -}}
{{- .Values.broker.tls.existingSecret | default (printf "%s-broker-tls" (include "zexec.fullname" .)) -}}
{{- end -}}

{{/* TLS on the Ingress whenever it has a host (a certificate needs a name). */}}
{{- define "zexec.ingressTls" -}}
{{- if and .Values.ingress.tls.enabled .Values.ingress.host -}}true{{- end -}}
{{- end -}}

{{- define "zexec.ingressScheme" -}}
{{- if include "zexec.ingressTls" . -}}https{{- else -}}http{{- end -}}
{{- end -}}

{{/* Deploy API URL clients use (the legacy client appends /rexec). */}}
{{- define "zexec.deployApiUrl" -}}
{{- if .Values.epApi.deployApiUrl -}}
{{- .Values.epApi.deployApiUrl -}}
{{- else if and .Values.deployApi.ingress.enabled .Values.ingress.host -}}
{{- printf "%s://%s" (include "zexec.ingressScheme" .) .Values.ingress.host -}}
{{- else -}}
{{- printf "http://%s.%s.svc:%v" (include "zexec.deployApiName" .) .Release.Namespace .Values.deployApi.service.port -}}
{{- end -}}
{{- end -}}

{{/*
A secret value: the given value, else the one already stored in the cluster (so upgrades
keep it), else random. (dict "ctx" $ "name" secretName "key" key "value" given)
*/}}
{{- define "zexec.secretValue" -}}
{{- if .value -}}
{{- .value -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .name -}}
{{- $data := dict -}}
{{- if $existing -}}{{- $data = default (dict) $existing.data -}}{{- end -}}
{{- if hasKey $data .key -}}
{{- index $data .key | b64dec -}}
{{- else -}}
{{- randAlphaNum 48 -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Identity provider env, shared by every app. */}}
{{- define "zexec.authEnv" -}}
{{- $a := .Values.global.auth -}}
- name: ZEXEC_AUTH_MODE
  value: {{ $a.mode | quote }}
- name: ZEXEC_AUTH_URL
  value: {{ $a.url | quote }}
- name: ZEXEC_AUTH_ALLOWED_GROUPS
  value: {{ join "," $a.allowedGroups | quote }}
- name: ZEXEC_AUTH_JWKS_URL
  value: {{ $a.jwksUrl | quote }}
- name: ZEXEC_AUTH_ISSUER
  value: {{ $a.issuer | quote }}
- name: ZEXEC_AUTH_AUDIENCE
  value: {{ $a.audience | quote }}
- name: ZEXEC_AUTH_TIMEOUT
  value: {{ $a.timeout | quote }}
{{- end -}}

{{/* Pod-level security context of every control-plane pod. */}}
{{- define "zexec.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security context (Pod Security "restricted"). */}}
{{- define "zexec.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Common env of every app container (writable /tmp, unbuffered logs). */}}
{{- define "zexec.commonEnv" -}}
- name: HOME
  value: /tmp
- name: PYTHONUNBUFFERED
  value: "1"
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
{{- end -}}

{{- define "zexec.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- end -}}

{{- define "zexec.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* priorityClassName / nodeSelector / tolerations / affinity of one component's values. */}}
{{- define "zexec.scheduling" -}}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
Bytes of a Kubernetes quantity ("3Gi", "512Mi", "1.5G", 1073741824). Fails on a suffix
that is not a byte unit (e.g. "m"), so a memory value is never silently misread.
*/}}
{{- define "zexec.bytes" -}}
{{- $q := toString . -}}
{{- $num := regexFind "^([0-9]+(\\.[0-9]*)?|\\.[0-9]+)" $q -}}
{{- $suffix := trimPrefix $num $q -}}
{{- $units := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 -}}
{{- if or (not $num) (not (hasKey $units $suffix)) -}}
{{- fail (printf "%q is not a memory quantity (use bytes, Ki, Mi, Gi, Ti, k, M, G or T)" $q) -}}
{{- end -}}
{{- mulf (float64 $num) (index $units $suffix) | int64 -}}
{{- end -}}

{{/* A quantity times n, in its own unit: (list "250m" 3) -> "750m", (list "4Gi" 3) -> "12Gi". */}}
{{- define "zexec.times" -}}
{{- $q := toString (index . 0) -}}
{{- $num := regexFind "^([0-9]+(\\.[0-9]*)?|\\.[0-9]+)" $q -}}
{{- $n := mulf (float64 $num) (index . 1) -}}
{{- if eq $n (floor $n) -}}{{ int64 $n }}{{ else }}{{ $n }}{{ end -}}{{ trimPrefix $num $q }}
{{- end -}}

{{/* The larger of a CPU quantity and a number of cores: (list "2" 4) -> 4, (list "2" 1) -> "2". */}}
{{- define "zexec.atLeastCpu" -}}
{{- $q := toString (index . 0) -}}
{{- $cores := float64 (index . 1) -}}
{{- $milli := 0.0 -}}
{{- if hasSuffix "m" $q -}}{{- $milli = float64 (trimSuffix "m" $q) -}}{{- else -}}{{- $milli = mulf (float64 $q) 1000 -}}{{- end -}}
{{- if gt (mulf $cores 1000) $milli -}}{{ $cores }}{{- else -}}{{ $q }}{{- end -}}
{{- end -}}

{{/* The larger of a memory quantity and a number of MiB: (list "4Gi" 8192) -> "8192Mi". */}}
{{- define "zexec.atLeastMemory" -}}
{{- $q := toString (index . 0) -}}
{{- $mib := int64 (index . 1) -}}
{{- if gt (mul $mib 1048576) (include "zexec.bytes" $q | int64) -}}{{ $mib }}Mi{{- else -}}{{ $q }}{{- end -}}
{{- end -}}

{{/* The ResourceQuota `hard` of user namespaces (YAML): three servers' worth (the current
one, a replacement built beside it, and one still terminating), each the larger of the
default server resources and the most one server may ask for (resourceLimits), then the
values' own entries over it. */}}
{{- define "zexec.resourceQuota" -}}
{{- $k := .Values.deployApi.kubernetes -}}
{{- $r := $k.serverResources -}}
{{- $m := .Values.deployApi.resourceLimits -}}
{{- $derived := dict "pods" "4"
  "requests.cpu" (include "zexec.times" (list (include "zexec.atLeastCpu" (list $r.requests.cpu $m.maxCpus)) 3))
  "requests.memory" (include "zexec.times" (list (include "zexec.atLeastMemory" (list $r.requests.memory $m.maxMemory)) 3))
  "limits.cpu" (include "zexec.times" (list (include "zexec.atLeastCpu" (list $r.limits.cpu $m.maxCpus)) 3))
  "limits.memory" (include "zexec.times" (list (include "zexec.atLeastMemory" (list $r.limits.memory $m.maxMemory)) 3))
  "requests.ephemeral-storage" (include "zexec.times" (list $k.serverStorage.request 3))
  "limits.ephemeral-storage" (include "zexec.times" (list $k.serverStorage.limit 3)) -}}
{{- if gt (int64 $m.maxGpus) 0 -}}
{{- $_ := set $derived (printf "requests.%s" $k.gpuResource) (toString (mul (int64 $m.maxGpus) 3)) -}}
{{- end -}}
{{- toYaml (merge (dict) $k.resourceQuota.hard $derived) -}}
{{- end -}}

{{/* The LimitRange `max` of one container in user namespaces (YAML): the larger of the
default server limits and the most one server may ask for. */}}
{{- define "zexec.limitRangeMax" -}}
{{- $k := .Values.deployApi.kubernetes -}}
{{- $m := .Values.deployApi.resourceLimits -}}
{{- $derived := dict "cpu" (include "zexec.atLeastCpu" (list $k.serverResources.limits.cpu $m.maxCpus))
  "memory" (include "zexec.atLeastMemory" (list $k.serverResources.limits.memory $m.maxMemory))
  "ephemeral-storage" (toString $k.serverStorage.limit) -}}
{{- toYaml (merge (dict) $k.limitRange.max $derived) -}}
{{- end -}}

{{/*
checksum/secrets: changes when the values naming or giving the broker's secrets change,
so the pods holding them restart then, and only then. Never computed from generated
(random or looked-up) content: `helm template` under GitOps cannot look secrets up, and
a checksum of fresh random values would restart the broker at every sync.
*/}}
{{- define "zexec.secretsChecksum" -}}
{{- $b := .Values.broker -}}
{{- $in := list $b.serverSecret $b.adminToken $b.tls.existingSecret (include "zexec.brokerExternalHost" .) -}}
checksum/secrets: {{ toJson $in | sha256sum | quote }}
{{- end -}}

{{/* Soft spread of a component's replicas over nodes: (dict "ctx" $ "values" .Values.x "component" "x"). */}}
{{- define "zexec.topologySpread" -}}
{{- $s := .values.topologySpread -}}
{{- if $s.enabled }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: {{ $s.topologyKey }}
    whenUnsatisfiable: {{ $s.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "zexec.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 8 }}
{{- end }}
{{- end -}}

{{/* Names of the pull secrets copied into user namespaces (YAML list). */}}
{{- define "zexec.serverPullSecrets" -}}
{{- $names := list -}}
{{- range (concat .Values.imagePullSecrets .Values.deployApi.kubernetes.imagePullSecrets) -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- toYaml (uniq $names) -}}
{{- end -}}

{{/* The warm pool's namespace. */}}
{{- define "zexec.poolNamespace" -}}
{{- .Values.deployApi.kubernetes.warmPool.namespace | default (printf "%s-pool" .Release.Namespace) -}}
{{- end -}}

{{/* The Deploy API's URL as pool pods reach it (in-cluster, with the route prefix). */}}
{{- define "zexec.poolDeployUrl" -}}
{{- .Values.deployApi.kubernetes.warmPool.deployUrl | default (printf "http://%s.%s.svc:%v/rexec" (include "zexec.deployApiName" .) .Release.Namespace .Values.deployApi.service.port) -}}
{{- end -}}
