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
