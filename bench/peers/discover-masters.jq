# discover-masters in jq: the same logic as hooks/registry/src/hooks/module/discover_masters.rs
# and the checks of hooks/registry/src/untrusted.rs.
# Input: the binding context array; $values[0]: the values document.
# Output (compact, one per line): the values patch (an array, [] when unchanged), the six
# metric operations, then one warning line per reason a master was skipped.

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

def hex2int: ascii_downcase | explode | reduce .[] as $c (0; . * 16 + (if $c >= 97 then $c - 87 else $c - 48 end));
def int2hex: [recurse(if . >= 16 then (. / 16 | floor) else empty end) | . % 16] | reverse
  | map("0123456789abcdef"[.:. + 1]) | add;

# A DNS-1123 subdomain of at most 63 characters.
def name_ok:
  length <= 63 and test("\\A[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\\z");

def v4re: "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}";

# The 16-bit groups of one side of "::" (null when invalid); the last group of the
# address may be a dotted IPv4 address (two groups).
def v6groups($last):
  if . == "" then []
  else split(":") as $g
  | [ range($g | length) as $k | $g[$k]
      | if $last and $k == ($g | length) - 1 and test("\\A" + v4re + "\\z") then
          split(".") | map(tonumber) | (.[0] * 256 + .[1]), (.[2] * 256 + .[3])
        elif test("\\A[0-9A-Fa-f]{1,4}\\z") then hex2int
        else null end ]
  | if any(. == null) then null else . end
  end;

# RFC 5952 text: lower-case hex, the first longest run of two or more zero groups as
# "::"; IPv4-mapped addresses as ::ffff:a.b.c.d.
def v6text:
  . as $g
  | if $g[0:6] == [0, 0, 0, 0, 0, 65535] then
      "::ffff:" + ([($g[6] / 256 | floor), $g[6] % 256, ($g[7] / 256 | floor), $g[7] % 256] | map(tostring) | join("."))
    else
      (reduce range(8) as $i ({best: 0, blen: 0, cur: 0, clen: 0};
         if $g[$i] == 0 then
           (if .clen == 0 then .cur = $i else . end) | .clen += 1
           | if .clen > .blen then .best = .cur | .blen = .clen else . end
         else .clen = 0 end)) as $r
      | ($g | map(int2hex)) as $hx
      | if $r.blen < 2 then $hx | join(":")
        else ($hx[:$r.best] | join(":")) + "::" + ($hx[$r.best + $r.blen:] | join(":")) end
    end;

# The address in canonical form, or null when it is not an IPv4 or IPv6 address.
def canonical_ip:
  if test("\\A" + v4re + "\\z") then .
  elif test(":") | not then null
  else split("::") as $h
  | (if ($h | length) == 1 then ($h[0] | v6groups(true)) | (if . != null and length == 8 then . else null end)
     elif ($h | length) == 2 then
       ($h[0] | v6groups(false)) as $a | ($h[1] | v6groups(true)) as $b
       | if $a == null or $b == null or ($a | length) + ($b | length) > 7 then null
         else $a + [range(8 - ($a | length) - ($b | length)) | 0] + $b end
     else null end)
  | if . == null then null else v6text end
  end;

# Escaped and cut at 80 characters, as untrusted::shown.
def shown:
  (explode | map(
     if . == 9 then "\\t" elif . == 13 then "\\r" elif . == 10 then "\\n"
     elif . == 39 then "\\'" elif . == 34 then "\\\"" elif . == 92 then "\\\\"
     elif . >= 32 and . <= 126 then [.] | implode
     else "\\u{" + int2hex + "}" end) | add // "")
  | if length > 80 then .[:80] + "…" else . end;

def reasons: [
  {reason: "no-address", msg: "master nodes without an InternalIP are skipped until they report one"},
  {reason: "invalid-name", msg: "master nodes skipped: the node name is not a DNS-1123 subdomain of at most 63 characters (lower-case letters, digits, '-' and '.', starting and ending alphanumeric); fix the Node, or remove its master label"},
  {reason: "invalid-address", msg: "master nodes skipped: the InternalIP is not an IPv4 or IPv6 address; fix the Node, or remove its master label"}];

snapshots as $s
| [ ($s.masters // [])[], ($s.legacy_masters // [])[] | item_value | select(. != null) | parts
    | if .ip == null or .ip == "" then {name, skip: "no-address"}
      elif .name | name_ok | not then {name, skip: "invalid-name"}
      else (.ip | canonical_ip) as $ip
      | if $ip == null then {name, skip: "invalid-address"} else {name, ip: $ip} end
      end ] as $items
| (reduce ($items[] | select(.skip == null)) as $i ({}; .[$i.name] = {name: $i.name, internalIP: $i.ip})) as $by_name
| ($by_name | to_entries | sort_by(.key) | map(.value)) as $masters
| [reasons[] | . + {nodes: [.reason as $r | $items[] | select(.skip == $r) | .name | select($by_name[.] == null)]}] as $skipped
| $values[0] as $v
| (if ($v.embeddedRegistry.internal.masters) == $masters then []
   else
     [ (if ($v | has("embeddedRegistry")) then empty else {op: "add", path: "/embeddedRegistry", value: {}} end),
       (if (($v.embeddedRegistry // {}) | has("internal")) then empty else {op: "add", path: "/embeddedRegistry/internal", value: {}} end),
       {op: "add", path: "/embeddedRegistry/internal/masters", value: $masters} ]
   end),
  {group: "masters_skipped", action: "expire"},
  ($skipped[] | {name: "d8_embedded_registry_masters_skipped", group: "masters_skipped", action: "set",
                 value: (.nodes | length), labels: {reason}}),
  {group: "masters", action: "expire"},
  {name: "d8_embedded_registry_masters", group: "masters", action: "set", value: ($masters | length)},
  ($skipped[] | select(.nodes != []) | {level: "warn", msg, hook: "discover-masters", reason, nodes: (.nodes | map(shown))})
