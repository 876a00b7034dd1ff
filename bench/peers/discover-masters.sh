#!/usr/bin/env bash
# discover-masters as a shell hook: bash and jq, the way shell hooks are usually written
# (one jq pass over the binding context, bash routes the results to the runner's files).
# The same logic as hooks/registry/src/hooks/module/discover_masters.rs; bench/hooks.sh checks
# that its output equals the Rust hook's on every benchmark input.
set -euo pipefail
here=$(dirname "$0")
if [ "${1:-}" = "--config" ]; then
  cat <<'CONFIG'
{"configVersion":"v1","kubernetes":[
 {"name":"masters","apiVersion":"v1","kind":"Node","keepFullObjectsInMemory":false,
  "labelSelector":{"matchExpressions":[{"key":"node-role.kubernetes.io/control-plane","operator":"Exists"}]},
  "jqFilter":"{\"name\": .metadata.name, \"internalIP\": ([.status.addresses[]? | select(.type == \"InternalIP\") | .address] | first)}"},
 {"name":"legacy_masters","apiVersion":"v1","kind":"Node","keepFullObjectsInMemory":false,
  "labelSelector":{"matchExpressions":[{"key":"node-role.kubernetes.io/master","operator":"Exists"}]},
  "jqFilter":"{\"name\": .metadata.name, \"internalIP\": ([.status.addresses[]? | select(.type == \"InternalIP\") | .address] | first)}"}]}
CONFIG
  exit 0
fi
mapfile -t out < <(jq -c --slurpfile values "$VALUES_PATH" -f "$here/discover-masters.jq" "$BINDING_CONTEXT_PATH")
# Line 1: the values patch; 2-7: the metric operations; then the warnings.
[ "${#out[@]}" -ge 7 ] || { echo "discover-masters: jq failed" >&2; exit 1; }
if [ "${#out[@]}" -gt 7 ]; then printf '%s\n' "${out[@]:7}" >&2; fi
if [ "${out[0]}" != "[]" ]; then printf '%s\n' "${out[0]}" > "$VALUES_JSON_PATCH_PATH"; fi
printf '%s\n' "${out[@]:1:6}" > "$METRICS_PATH"
