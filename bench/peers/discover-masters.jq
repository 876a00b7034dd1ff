# discover-masters in jq: the same logic as hooks/registry/src/hooks/discover_masters.rs.
# Input: the binding context array; $values[0]: the values document.
# Output (compact, one per line): the values patch (an array, [] when unchanged), the
# two metric operations, then the names of master nodes without an InternalIP.

# Snapshots as of the last context; a Synchronization context's own objects count as
# the snapshot of its binding.
def snapshots:
  reduce .[] as $c ({};
    . + ($c.snapshots // {})
      + (if $c.type == "Synchronization" and ($c | has("objects")) then {($c.binding): $c.objects} else {} end));

# A snapshot item's value: filterResult when present (even null), else the object.
def item_value:
  if has("filterResult") then .filterResult elif has("object") then .object else null end;

# (name, InternalIP) from a filter result or a full Node.
def parts:
  if .name != null then {name: .name, ip: .internalIP}
  elif .metadata != null then
    {name: .metadata.name, ip: ([.status.addresses[]? | select(.type == "InternalIP") | .address] | first)}
  else error("neither a Node nor a filter result") end;

snapshots as $s
| [($s.masters // [])[], ($s.legacy_masters // [])[] | item_value | select(. != null) | parts] as $items
| (reduce ($items[] | select(.ip != null and .ip != "")) as $i ({}; .[$i.name] = {name: $i.name, internalIP: $i.ip})) as $by_name
| ($by_name | to_entries | sort_by(.key) | map(.value)) as $masters
| [$items[] | select(.ip == null or .ip == "") | .name | select($by_name[.] == null)] as $without_ip
| $values[0] as $v
| (if ($v.embeddedRegistry.internal.masters) == $masters then []
   else
     [ (if ($v | has("embeddedRegistry")) then empty else {op: "add", path: "/embeddedRegistry", value: {}} end),
       (if (($v.embeddedRegistry // {}) | has("internal")) then empty else {op: "add", path: "/embeddedRegistry/internal", value: {}} end),
       {op: "add", path: "/embeddedRegistry/internal/masters", value: $masters} ]
   end),
  {group: "masters", action: "expire"},
  {name: "d8_embedded_registry_masters", group: "masters", action: "set", value: ($masters | length)},
  $without_ip
