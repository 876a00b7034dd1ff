{{- /* Labels every object of the module carries (Deckhouse convention). */ -}}
{{- define "embedded_registry.labels" -}}
heritage: deckhouse
module: embedded-registry
{{- with . }}
app: {{ . }}
{{- end }}
{{- end -}}

{{- /* True when the chart renders a registry (any mode but Direct). */ -}}
{{- define "embedded_registry.enabled" -}}
{{- $mode := .Values.embeddedRegistry.internal.mode | default "Direct" -}}
{{- if ne $mode "Direct" }}true{{ end -}}
{{- end -}}
