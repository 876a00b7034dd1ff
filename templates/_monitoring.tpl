{{- /* Monitoring, the Deckhouse way (monitoring/README.md): objects for Prometheus only
       when Deckhouse's monitoring modules are enabled, decided from
       global.enabledModules as lib-helm decides it. */ -}}

{{- /* True when the Prometheus operator's CRDs are there: PrometheusRule, PodMonitor. */ -}}
{{- define "embedded_registry.monitoring" -}}
{{- if has "operator-prometheus-crd" (.Values.global.enabledModules | default list) }}true{{ end -}}
{{- end -}}

{{- /* True when the prometheus module's CRDs are there: GrafanaDashboardDefinition. */ -}}
{{- define "embedded_registry.dashboards" -}}
{{- if has "prometheus-crd" (.Values.global.enabledModules | default list) }}true{{ end -}}
{{- end -}}

{{- /* Ports of the manager (hostNetwork): kube-rbac-proxy on the node's address, the only
       one reachable from outside; shell-operator on loopback only. distribution's own
       metrics stay on 127.0.0.1:5002 (the static pod). */ -}}
{{- define "embedded_registry.metrics_port" -}}5003{{- end -}}
{{- define "embedded_registry.shell_operator_port" -}}5004{{- end -}}

{{- /* An image Deckhouse ships for every module (global.modulesImages.digests.common),
       by digest: (dict "ctx" $ "name" "kubeRbacProxy"). */ -}}
{{- define "embedded_registry.common_image" -}}
{{- $images := .ctx.Values.global.modulesImages -}}
{{- $digest := index ($images.digests.common | default dict) .name -}}
{{- if not $digest }}
{{- fail (printf "global.modulesImages.digests.common.%s is not set: Deckhouse provides it; in the local converge, pass it with --global-values" .name) }}
{{- end }}
{{- printf "%s@%s" $images.registry.base $digest -}}
{{- end -}}
