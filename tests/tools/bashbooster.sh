# A stand-in for the two bashbooster functions the module's mirror-configuration script
# calls (Deckhouse's candi/bashible/bashbooster: bb-d8-node-name reads the node name
# bashible discovered, bb-kubectl-exec runs kubectl with the kubelet's kubeconfig). It
# is NOT bashbooster: it only records what the script asked for, with no network.
#
#   BB_NODE_NAME      the name bb-d8-node-name prints
#   BB_RECORD         file that gets one line per bb-kubectl-exec call: its arguments,
#                     NUL-separated, base64-encoded (so any argument survives)
#   BB_KUBECTL_FAIL   when set to 1, bb-kubectl-exec records the call and fails, as
#                     kubectl does when the API server cannot be reached
#   BB_SNAPSHOT_DIR   when set, each call also copies that directory to
#                     $BB_RECORD.<call number> (what the node held when it was asked)
bb-d8-node-name() {
  printf '%s\n' "${BB_NODE_NAME:?BB_NODE_NAME is not set}"
}

bb-kubectl-exec() {
  printf '%s\0' "$@" | base64 -w0 >> "${BB_RECORD:?BB_RECORD is not set}"
  printf '\n' >> "$BB_RECORD"
  if [ -n "${BB_SNAPSHOT_DIR:-}" ]; then
    cp -a "$BB_SNAPSHOT_DIR" "$BB_RECORD.$(wc -l < "$BB_RECORD")"
  fi
  if [ "${BB_KUBECTL_FAIL:-0}" = 1 ]; then
    echo "error: the server could not be reached (stand-in)" >&2
    return 1
  fi
}
