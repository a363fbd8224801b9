{{- define "palisade.labels" -}}
app.kubernetes.io/part-of: palisade
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "palisade.operatorSelector" -}}
app.kubernetes.io/name: palisade-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "palisade.podSecurity" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "palisade.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* CEL: the object, or its pod template, carries the palisade.dev/mcp-server label. */}}
{{- define "palisade.claimsMcp" -}}
object != null && ((has(object.metadata.labels) && 'palisade.dev/mcp-server' in object.metadata.labels) || (object.kind != 'Pod' && object.kind != 'CronJob' && has(object.spec.template.metadata) && has(object.spec.template.metadata.labels) && 'palisade.dev/mcp-server' in object.spec.template.metadata.labels) || (object.kind == 'CronJob' && has(object.spec.jobTemplate.spec.template.metadata) && has(object.spec.jobTemplate.spec.template.metadata.labels) && 'palisade.dev/mcp-server' in object.spec.jobTemplate.spec.template.metadata.labels))
{{- end -}}


{{/* An image reference pinned by digest, or a failed render naming the value to set. */}}
{{- define "palisade.pinnedImage" -}}
{{- $ref := index . 0 -}}
{{- $name := index . 1 -}}
{{- if not $ref -}}
{{- fail (printf "%s is required: an image pinned by digest, REPOSITORY@sha256:DIGEST (e.g. --set %s=registry.example/palisade@sha256:...)" $name $name) -}}
{{- end -}}
{{- if not (regexMatch "^[^@\\s]+@sha256:[0-9a-f]{64}$" $ref) -}}
{{- fail (printf "%s must be pinned by digest (REPOSITORY@sha256:DIGEST), got %q" $name $ref) -}}
{{- end -}}
{{- if hasSuffix (repeat 64 "0") $ref -}}
{{- fail (printf "%s has a placeholder digest that no registry serves: %q" $name $ref) -}}
{{- end -}}
{{- $ref -}}
{{- end -}}

{{/* Egress to the cluster's DNS (any namespace's kube-dns pods). */}}
{{- define "palisade.dnsEgress" -}}
- to:
    - namespaceSelector: {}
      podSelector: { matchLabels: { k8s-app: kube-dns } }
  ports:
    - { port: 53, protocol: UDP }
    - { port: 53, protocol: TCP }
{{- end -}}
