{{- /* The garbage-collection window of a Detached registry on S3 (docs/internal/rotation.md).
       Source: the gc-window module hook, d8_embedded_registry_gc_window_opened_timestamp_seconds
       (0 when no window is open) and d8_embedded_registry_gc_window_last_timed_out. */ -}}
{{- if eq (.Values.embeddedRegistry.internal.mode | default "Direct") "Detached" }}
- name: d8.embedded-registry.gc-window
  rules:
    - alert: D8EmbeddedRegistryGcWindowStuck
      expr: |
        (time() - max(d8_embedded_registry_gc_window_opened_timestamp_seconds > 0)) > 4500
        or max(d8_embedded_registry_gc_window_last_timed_out) == 1
      for: 15m
      labels:
        severity_level: "5"
        tier: cluster
      annotations:
        plk_protocol_version: "1"
        plk_markup_format: markdown
        summary: Garbage collection of the embedded registry's S3 mirror is stuck.
        description: |
          A garbage-collection window of the mirror on S3 has been open for more than 75 minutes, or the last
          one ended after its one-hour bound without collecting. While a window is open every master's registry
          is read-only: pulls work, pushes are refused (`405 Method not allowed`).

          Usually a master does not run its read-only (or, on the way back, its read-write) configuration:
          its registry is down or its node hook cannot install the files. To fix: check the
          `registry-node-<node>-status` ConfigMaps in `d8-system` (`appliedGcWindow`, `registry`) and the
          `node-files` log of the embedded-registry manager pod on each master. The next rotation asks for a
          new window.
{{- end }}
