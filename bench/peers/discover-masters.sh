#!/usr/bin/env bash
# discover-masters as a shell hook: bash and jq, the way shell hooks are usually written
# (one jq pass over the binding context, bash routes the results to the runner's files).
# The same logic as hooks/registry/src/hooks/discover_masters.rs; bench/hooks.sh checks
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
out=$(jq -c --slurpfile values "$VALUES_PATH" -f "$here/discover-masters.jq" "$BINDING_CONTEXT_PATH")
{ read -r patch; read -r expire; read -r set; read -r without_ip; } <<<"$out"
if [ "$without_ip" != "[]" ]; then
  printf '{"level":"warn","msg":"master nodes without an InternalIP are skipped until they report one","hook":"discover-masters","nodes":%s}\n' "$without_ip" >&2
fi
if [ "$patch" != "[]" ]; then printf '%s\n' "$patch" > "$VALUES_JSON_PATCH_PATH"; fi
printf '%s\n%s\n' "$expire" "$set" > "$METRICS_PATH"
