{{- /* The rotation of old releases (Detached mode only; docs/internal/rotation.md). Source: the
       `rotate` node hook (shell-operator in the manager on the mirror master),
       `d8_embedded_registry_rotation_failed{node}`. */ -}}
{{- if eq (.Values.embeddedRegistry.internal.mode | default "Direct") "Detached" }}
- name: d8.embedded-registry.rotation
  rules:
    - alert: D8EmbeddedRegistryRotationFailing
      expr: |
        max by (node) (d8_embedded_registry_rotation_failed) == 1
      for: 25h
      labels:
        severity_level: "6"
        tier: cluster
      annotations:
        plk_protocol_version: "1"
        plk_markup_format: markdown
        summary: Rotation of old releases in the embedded registry keeps failing.
        description: |
          The daily rotation of old platform releases on master `{{`{{ $labels.node }}`}}` has failed at least twice in a row,
          so old images are not removed and the mirror keeps growing. Nothing was deleted by a failed run
          before the point it names.

          To fix: read the `rotate` hook's log in the embedded-registry manager pod on that node, and run
          `embedded-registry rotate --dry-run` against the mirror to see the plan.
{{- end }}
