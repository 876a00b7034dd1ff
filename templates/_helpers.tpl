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

{{- /* Where the static pod mounts the node's files (see the node hook that writes them). */ -}}
{{- define "embedded_registry.pki_dir" -}}/pki{{- end -}}
{{- define "embedded_registry.data_dir" -}}/data{{- end -}}
{{- define "embedded_registry.token_issuer" -}}embedded-registry-auth{{- end -}}
{{- define "embedded_registry.token_service" -}}embedded-registry{{- end -}}

{{- /* distribution's configuration for one master: (dict "m" master "v" module values). */ -}}
{{- define "embedded_registry.distribution_config" -}}
{{- $m := .m -}}{{- $v := .v -}}{{- $pki := include "embedded_registry.pki_dir" . -}}
version: 0.1
log:
  level: info
  formatter: json
storage:
  filesystem:
    rootdirectory: {{ include "embedded_registry.data_dir" . }}
  delete:
    enabled: true
  redirect:
    disable: true
  cache:
    blobdescriptor: inmemory
http:
  addr: {{ printf "%s:5001" $m.internalIP | quote }}
  secret: {{ $v.internal.pki.httpSecret | quote }}
  tls:
    certificate: {{ $pki }}/distribution.crt
    key: {{ $pki }}/distribution.key
  debug:
    addr: "127.0.0.1:5002"
    prometheus:
      enabled: true
      path: /metrics
auth:
  token:
    realm: {{ printf "https://%s:5051/auth" $m.internalIP | quote }}
    service: {{ include "embedded_registry.token_service" . }}
    issuer: {{ include "embedded_registry.token_issuer" . }}
    rootcertbundle: {{ $pki }}/token-bundle.crt
    autoredirect: false
{{- if eq $v.internal.mode "Proxy" }}
proxy:
  remoteurl: {{ printf "%s://%s" $v.proxy.scheme $v.proxy.host | quote }}
  {{- if $v.proxy.user }}
  username: {{ $v.proxy.user | quote }}
  password: {{ $v.proxy.password | quote }}
  {{- end }}
  ttl: {{ $v.proxy.ttl | quote }}
{{- end }}
{{- end -}}

{{- /* cesanta docker_auth's configuration for one master. First matching ACL rule wins;
       no match is a denial. */ -}}
{{- define "embedded_registry.auth_config" -}}
{{- $m := .m -}}{{- $v := .v -}}{{- $pki := include "embedded_registry.pki_dir" . -}}
{{- $u := $v.internal.users -}}
server:
  addr: {{ printf "%s:5051" $m.internalIP | quote }}
  certificate: {{ $pki }}/auth.crt
  key: {{ $pki }}/auth.key
token:
  issuer: {{ include "embedded_registry.token_issuer" . }}
  expiration: 900
  certificate: {{ $pki }}/token.crt
  key: {{ $pki }}/token.key
  disable_legacy_key_id: true
users:
  {{ $u.ro.name | quote }}:
    password: {{ $u.ro.passwordHash | quote }}
  {{ $u.rw.name | quote }}:
    password: {{ $u.rw.passwordHash | quote }}
acl:
  - match: {account: {{ $u.rw.name | quote }}}
    actions: ["*"]
    comment: rw pulls, pushes and deletes in every repository and lists the catalog
  - match: {account: {{ $u.ro.name | quote }}, type: repository}
    actions: ["pull"]
    comment: ro pulls only
{{- end -}}
