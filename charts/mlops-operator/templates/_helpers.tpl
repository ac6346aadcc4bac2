{{- define "mlops.fullname" -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- define "mlops.labels" -}}
app.kubernetes.io/name: mlops-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
{{- define "mlops.selector" -}}
app.kubernetes.io/name: mlops-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "mlops.appRules" -}}
# Application rules: exactly the verbs the operator uses (its request counters), no Secrets
# TrainingRuns: a DriftPolicy's retrains are created (never updated) and pruned; the other kinds only read
- apiGroups: [mlops.dev]
  resources: [trainingruns]
  verbs: [get, list, watch, create, delete]
- apiGroups: [mlops.dev]
  resources: [modeldeployments, driftpolicies]
  verbs: [list, watch]
- apiGroups: [mlops.dev]
  resources: [trainingruns/status, modeldeployments/status, driftpolicies/status]
  verbs: [patch]
# Jobs are created once (their template is immutable), read by name after a conflict, deleted when done
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch]
# a DriftPolicy's window, a pipeline's ConfigMap: read and written by name, never listed
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, patch]
# a revision's and a Job's Pods, listed by label when a decision needs them
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
# HTTPRoutes are read by name (never watched)
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, create, patch, delete]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create]
# a TrainingRun delegated to Kubeflow Trainer: its TrainJob, read by name (polled, never watched)
- apiGroups: [trainer.kubeflow.org]
  resources: [trainjobs]
  verbs: [get, create, delete]
{{- end -}}
