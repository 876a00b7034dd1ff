{{- /* Alerts of the registries themselves: rendered only where a registry runs.
       Sources: kube-state-metrics (the static pods), the `node-files` node hook
       (shell-operator in the manager, `d8_embedded_registry_cache_only{node}`,
       `d8_embedded_registry_warm_images{node,state}`) and
       distribution's own metrics (through the manager's kube-rbac-proxy; the PodMonitor
       adds `job="embedded-registry"` and `node`). */ -}}
{{- if include "embedded_registry.enabled" . }}
- name: d8.embedded-registry.registry
  rules:
    - alert: D8EmbeddedRegistryPodNotReady
      expr: |
        min by (pod) (kube_pod_status_ready{namespace="d8-system", pod=~"embedded-registry-.+", pod!~"embedded-registry-manager-.+", condition="true"}) == 0
      for: 10m
      labels:
        severity_level: "4"
        tier: cluster
      annotations:
        plk_protocol_version: "1"
        plk_markup_format: markdown
        summary: An embedded registry is not ready.
        description: |
          Pod `{{`{{ $labels.pod }}`}}` has not been ready for 10 minutes: nodes skip this master's registry.

          To fix: read the pod's logs and the ConfigMap `registry-node-<node>-status` in `d8-system`
          (what the node hook applied and what its probe of the registry answered).
    - alert: D8EmbeddedRegistryPodNotRunning
      expr: |
        max by (pod) (kube_pod_status_phase{namespace="d8-system", pod=~"embedded-registry-.+", pod!~"embedded-registry-manager-.+", phase="Running"}) == 0
      for: 10m
      labels:
        severity_level: "4"
        tier: cluster
      annotations:
        plk_protocol_version: "1"
        plk_markup_format: markdown
        summary: An embedded registry is not running.
        description: |
          Pod `{{`{{ $labels.pod }}`}}` has not been running for 10 minutes.

          To fix: read the pod's logs (a Detached registry runs `garbage-collect` first) and the ConfigMap
          `registry-node-<node>-status` in `d8-system`.
    - alert: D8EmbeddedRegistryServesCacheOnly
      expr: |
        max by (node) (d8_embedded_registry_cache_only) == 1
      for: 30m
      labels:
        severity_level: "5"
        tier: cluster
      annotations:
        plk_protocol_version: "1"
        plk_markup_format: markdown
        summary: An embedded Proxy registry has served only its cache for 30 minutes.
        description: |
          The upstream registry has not answered master `{{`{{ $labels.node }}`}}` for 30 minutes, so its registry serves
          what its cache holds and answers `404 manifest unknown` for anything else; pods whose images were never
          pulled cannot start. Nothing cached expires meanwhile.

          To fix: check the upstream (`embedded-registry check-upstream`) and the network from the masters to it; the
          registry proxies again once the upstream has answered for `proxy.upstreamHysteresis`. The ConfigMap
          `registry-node-<node>-status` in `d8-system` says since when.
    - alert: D8EmbeddedRegistryCacheNotWarm
      expr: |
        min by (node) (d8_embedded_registry_warm_images{state="cached"})
          / max by (node) (d8_embedded_registry_warm_images{state="wanted"}) < 1
      for: 1h
      labels:
        severity_level: "6"
        tier: cluster
      annotations:
        plk_protocol_version: "1"
        plk_markup_format: markdown
        summary: An embedded Proxy registry's cache has lacked images of the running release for an hour.
        description: |
          The cache of master `{{`{{ $labels.node }}`}}` has not held every image of the running release for an hour:
          a switch to this registry waits (`CacheWarm`), and in an upstream outage the images it lacks cannot be pulled.

          To fix: the ConfigMap `registry-node-<node>-status` in `d8-system` names the first missing images
          (`warmMissing`); the registry pod's `warm` container logs why each pass left them (an upstream that lacks
          them, refuses the credentials or does not answer, a full disk under `/opt/deckhouse/registry`).
    - alert: D8EmbeddedRegistryServerErrors
      expr: |
        sum by (node) (rate(registry_http_requests_total{job="embedded-registry", code=~"5.."}[5m]))
          / sum by (node) (rate(registry_http_requests_total{job="embedded-registry"}[5m])) > 0.05
      for: 15m
      labels:
        severity_level: "5"
        tier: cluster
      annotations:
        plk_protocol_version: "1"
        plk_markup_format: markdown
        summary: An embedded registry answers more than 5% of its requests with a server error.
        description: |
          For 15 minutes, more than 5% of the requests to the registry on master `{{`{{ $labels.node }}`}}` have been
          answered with a 5xx status: pulls through this master fail, and nodes try the next master.

          To fix: read the registry pod's logs on that master (`kubectl -n d8-system logs embedded-registry-<node>
          -c distribution`): a full disk under `/opt/deckhouse/registry`, or (Proxy mode) an upstream that fails.
{{- end }}
