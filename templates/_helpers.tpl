{{- /* Above 400 lines: the named templates the chart's files share (configs, the static
     pod, the hosts.toml); one file, as Helm charts keep their helpers. */ -}}
{{- /* Labels every object of the module carries (Deckhouse convention). */ -}}
{{- define "embedded_registry.labels" -}}
heritage: deckhouse
module: embedded-registry
{{- with . }}
app: {{ . }}
{{- end }}
{{- end -}}

{{- /* True when a registry runs on the masters: the registry-switch hook decides
       (internal.switch.registry), not the mode setting, so a registry whose checks
       failed is never rendered. */ -}}
{{- define "embedded_registry.enabled" -}}
{{- $sw := .Values.embeddedRegistry.internal.switch | default dict -}}
{{- if $sw.registry }}true{{ end -}}
{{- end -}}

{{- /* True when the manager DaemonSet runs: a registry runs, or a master still has
       its static pod to remove. */ -}}
{{- define "embedded_registry.manager" -}}
{{- $sw := .Values.embeddedRegistry.internal.switch | default dict -}}
{{- if $sw.manager }}true{{ end -}}
{{- end -}}

{{- /* A string as one shell word: single-quoted, every ' written as '\''. Use it for
       every value a node's script receives; data stays data whatever it holds. */ -}}
{{- define "embedded_registry.shq" -}}
{{- printf "'%s'" (replace "'" "'\\''" .) -}}
{{- end -}}

{{- /* host:port for an address, IPv6 in brackets: (dict "ip" address "port" port). */ -}}
{{- define "embedded_registry.hostport" -}}
{{- if contains ":" .ip }}{{ printf "[%s]:%v" .ip .port }}{{ else }}{{ printf "%s:%v" .ip .port }}{{ end -}}
{{- end -}}

{{- /* containerd's hosts.toml for the pull address: every proven master in order, with
       the module CA (a path relative to the file's directory, as containerd resolves
       it): (dict "address" pull address "mirrors" masters). Strings are written as
       JSON strings, which TOML reads as the same basic strings. */ -}}
{{- define "embedded_registry.hosts_toml" -}}
server = {{ printf "https://%s" .address | toJson }}
{{- range $m := .mirrors }}

[host.{{ printf "https://%s" (include "embedded_registry.hostport" (dict "ip" $m.internalIP "port" 5001)) | toJson }}]
  capabilities = ["pull", "resolve"]
  ca = "embedded-registry-ca.crt"
{{- end }}
{{ end -}}

{{- /* Where the static pod mounts the node's files (see the node hook that writes them). */ -}}
{{- define "embedded_registry.pki_dir" -}}/pki{{- end -}}
{{- define "embedded_registry.data_dir" -}}/data{{- end -}}
{{- define "embedded_registry.token_issuer" -}}embedded-registry-auth{{- end -}}
{{- define "embedded_registry.token_service" -}}embedded-registry{{- end -}}

{{- /* The S3 bucket of the registry the masters run: internal.switch.registry.s3, the
       switch's target (checked by the storage check before any master got it; never
       the settings, which may hold a bucket that failed its check), as JSON; {} on Fs. */ -}}
{{- define "embedded_registry.s3" -}}
{{- $r := (.internal.switch | default dict).registry | default dict -}}
{{- if $r.s3 -}}
{{- toJson $r.s3 -}}
{{- else -}}
{}
{{- end -}}
{{- end -}}

{{- /* The garbage-collection window's tag for one master: (dict "m" master "v" module
       values). On a Detached registry on S3 (internal.gcWindow, the gc-window hook):
       "<id>/read-only" while the window wants the master read-only (ReadOnly, Collect),
       "<id>/collect" on the collector in Collect; empty otherwise (and always on Fs).
       Mirrors GcWindow::tag (model/gc_window.rs). */ -}}
{{- define "embedded_registry.gc_tag" -}}
{{- $w := .v.internal.gcWindow | default dict -}}
{{- $r := (.v.internal.switch | default dict).registry | default dict -}}
{{- if and (eq ($r.mode | default "") "Detached") (include "embedded_registry.s3" .v | fromJson).bucket -}}
{{- if eq ($w.phase | default "") "ReadOnly" -}}
{{- printf "%s/read-only" $w.id -}}
{{- else if eq ($w.phase | default "") "Collect" -}}
{{- if eq $w.collector .m.name }}{{ printf "%s/collect" $w.id }}{{ else }}{{ printf "%s/read-only" $w.id }}{{ end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- /* The CA bundle distribution trusts instead of the system roots (SSL_CERT_FILE; never
       AWS_CA_BUNDLE, which makes distribution's S3 driver panic at start): proxy.ca and
       the S3 endpoint's CA, one after the other; empty when neither is set. (dict "v"
       module values) */ -}}
{{- define "embedded_registry.ca_bundle" -}}
{{- $v := .v -}}
{{- $out := "" -}}
{{- $proxy := $v.internal.switch.registry.proxy | default dict -}}
{{- if $proxy.ca }}{{ $out = $proxy.ca }}{{ end -}}
{{- $s3 := include "embedded_registry.s3" $v | fromJson -}}
{{- if $s3.ca -}}
{{- if and $out (not (hasSuffix "\n" $out)) }}{{ $out = printf "%s\n" $out }}{{ end -}}
{{- $out = printf "%s%s" $out $s3.ca -}}
{{- end -}}
{{- $out -}}
{{- end -}}

{{- /* distribution's configuration for one master: (dict "m" master "v" module values
       ["cacheOnly" true] ["configId" id]). The cache-only variant of a Proxy registry (the node hook
       installs it while the upstream does not answer) serves what the cache holds and
       nothing else: no proxy section (distribution exits at start when its upstream is
       unreachable, and its TTL scheduler would expire content), read-only storage. */ -}}
{{- define "embedded_registry.distribution_config" -}}
{{- $m := .m -}}{{- $v := .v -}}{{- $pki := include "embedded_registry.pki_dir" . -}}
{{- $s3 := include "embedded_registry.s3" $v | fromJson -}}
{{- $gc := include "embedded_registry.gc_tag" (dict "m" $m "v" $v) -}}
{{- if $gc }}
# Garbage-collection window {{ $gc }}: read-only while the bucket is collected.
{{ end -}}
version: 0.1
log:
  level: info
  formatter: json
storage:
  {{- if $s3.bucket }}
  {{- $root := $s3.rootDirectory | default "/embedded-registry" | trimSuffix "/" }}
  {{- if eq $v.internal.switch.registry.mode "Proxy" }}
  {{- /* Proxies keep their TTL scheduler's state in the storage and expire blobs
         globally (distribution #3251, #2367): each master gets its own root. */}}
  {{- $root = printf "%s/%s" $root $m.name }}
  {{- end }}
  s3:
    regionendpoint: {{ $s3.endpoint | quote }}
    region: {{ $s3.region | quote }}
    bucket: {{ $s3.bucket | quote }}
    rootdirectory: {{ $root | quote }}
    accesskey: {{ $s3.accessKey | quote }}
    secretkey: {{ $s3.secretKey | quote }}
    forcepathstyle: {{ ne (toString $s3.forcePathStyle) "false" }}
    secure: {{ hasPrefix "https://" $s3.endpoint }}
    v4auth: true
  {{- else }}
  filesystem:
    rootdirectory: {{ include "embedded_registry.data_dir" . }}
  {{- end }}
  delete:
    enabled: true
  {{- /* Blobs are always served through the registry: with S3, distribution would
         otherwise answer 307 to a presigned S3 URL, and every node would need to reach
         and trust the S3 endpoint (nodes reach and trust only the masters). */}}
  redirect:
    disable: true
  cache:
    blobdescriptor: inmemory
  {{- if or .cacheOnly $gc }}
  maintenance:
    readonly:
      enabled: true
  {{- end }}
http:
  addr: {{ include "embedded_registry.hostport" (dict "ip" $m.internalIP "port" 5001) | quote }}
  secret: {{ $v.internal.pki.httpSecret | quote }}
  tls:
    certificate: {{ $pki }}/distribution.crt
    key: {{ $pki }}/distribution.key
  {{- if .configId }}
  # Which files this process runs: the node hook compares it with the files it
  # installed before it reports the registry ready (rolling restarts).
  headers:
    X-Embedded-Registry-Config: [{{ .configId | quote }}]
  {{- end }}
  debug:
    addr: "127.0.0.1:5002"
    prometheus:
      enabled: true
      path: /metrics
auth:
  token:
    realm: {{ printf "https://%s/auth" (include "embedded_registry.hostport" (dict "ip" $m.internalIP "port" 5051)) | quote }}
    service: {{ include "embedded_registry.token_service" . }}
    issuer: {{ include "embedded_registry.token_issuer" . }}
    rootcertbundle: {{ $pki }}/token-bundle.crt
    autoredirect: false
{{- $r := $v.internal.switch.registry }}
{{- if and (eq $r.mode "Proxy") (not .cacheOnly) }}
proxy:
  remoteurl: {{ printf "%s://%s" $r.proxy.scheme $r.proxy.host | quote }}
  {{- if $r.proxy.user }}
  username: {{ $r.proxy.user | quote }}
  password: {{ $r.proxy.password | quote }}
  {{- end }}
  ttl: {{ $r.proxy.ttl | quote }}
{{- end }}
{{- end -}}

{{- /* cesanta docker_auth's configuration for one master. First matching ACL rule wins;
       no match is a denial. */ -}}
{{- define "embedded_registry.auth_config" -}}
{{- $m := .m -}}{{- $v := .v -}}{{- $pki := include "embedded_registry.pki_dir" . -}}
{{- $u := $v.internal.users -}}
server:
  addr: {{ include "embedded_registry.hostport" (dict "ip" $m.internalIP "port" 5051) | quote }}
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

{{- /* Host paths the node hook writes and the static pod mounts. */ -}}
{{- define "embedded_registry.host_config_dir" -}}/etc/kubernetes/registry/config{{- end -}}
{{- define "embedded_registry.host_pki_dir" -}}/etc/kubernetes/registry/pki{{- end -}}
{{- define "embedded_registry.host_data_dir" -}}/opt/deckhouse/registry/data{{- end -}}
{{- define "embedded_registry.host_warm_dir" -}}/opt/deckhouse/registry/warm{{- end -}}
{{- define "embedded_registry.run_as" -}}64535{{- end -}}

{{- /* An image of the module by digest: (dict "ctx" $ "name" "distribution"). */ -}}
{{- define "embedded_registry.image" -}}
{{- $images := .ctx.Values.global.modulesImages -}}
{{- printf "%s@%s" $images.registry.base (index $images.digests.embeddedRegistry .name) -}}
{{- end -}}

{{- /* The wanted list's inputs for a Proxy registry's warm-up (config.warm-images.json):
       the base, the release and every module digest, as the values hold them; the
       binary builds the list from them (warm/list.rs), as registry-switch does from
       the values, so both hash the same list. `next` (internal.warm.next, only when
       a release is announced): the releases whose images the warm process caches
       after the running one's; it is not part of the running list or its hash. Empty
       (no warm-up) when the registry is not a Proxy or no release is named. */ -}}
{{- define "embedded_registry.warm_list" -}}
{{- $sw := .Values.embeddedRegistry.internal.switch | default dict -}}
{{- $version := .Values.global.deckhouseVersion | default "" -}}
{{- if and $sw.registry (eq $sw.registry.mode "Proxy") $version -}}
{{- $images := .Values.global.modulesImages -}}
{{- $list := dict "base" $images.registry.base "deckhouseVersion" $version "digests" $images.digests -}}
{{- with (.Values.embeddedRegistry.internal.warm | default dict).next -}}
{{- $_ := set $list "next" . -}}
{{- end -}}
{{- $list | toJson -}}
{{- end -}}
{{- end -}}

{{- /* The static pod of one master: (dict "ctx" $ "m" master "hash" config hash). */ -}}
{{- define "embedded_registry.static_pod" -}}
{{- $runAs := include "embedded_registry.run_as" . | int -}}
apiVersion: v1
kind: Pod
metadata:
  name: embedded-registry
  namespace: d8-system
  labels:
    {{- include "embedded_registry.labels" "embedded-registry" | nindent 4 }}
    component: embedded-registry
  annotations:
    # Any change of a config or PKI file changes this, so kubelet restarts the pod.
    embedded-registry.deckhouse.io/config-hash: {{ .hash | quote }}
spec:
  hostNetwork: true
  # The node's resolver, not cluster DNS: CoreDNS runs from images this registry may
  # serve, so in an outage or while the cluster starts it may not answer, and the
  # registry resolves nothing of the cluster (it binds and announces its realm on the
  # node's address; only the Proxy upstream has a name).
  dnsPolicy: Default
  priorityClassName: system-node-critical
  securityContext:
    runAsNonRoot: true
    runAsUser: {{ $runAs }}
    runAsGroup: {{ $runAs }}
    seccompProfile:
      type: RuntimeDefault
  {{- /* On S3 the bucket is shared: garbage collection never runs at a registry's start
         while others write, only on the collector of a garbage-collection window, once
         every master runs read-only (the gc-window hook, docs/internal/rotation.md). */}}
  {{- $v := .ctx.Values.embeddedRegistry }}
  {{- $onS3 := (include "embedded_registry.s3" $v | fromJson).bucket }}
  {{- $collects := hasSuffix "/collect" (include "embedded_registry.gc_tag" (dict "m" .m "v" $v)) }}
  {{- if and (eq $v.internal.switch.registry.mode "Detached") (or (not $onS3) $collects) }}
  # Garbage collection needs the registry stopped: on a disk it runs before every start
  # of a mirror, and the rotate hook restarts the pod after it deleted manifests; on S3
  # only on this window's collector, with every registry of the bucket read-only. Never
  # --delete-untagged: module images live untagged in the root repository.
  initContainers:
    - name: garbage-collect
      image: {{ include "embedded_registry.image" (dict "ctx" .ctx "name" "distribution") }}
      imagePullPolicy: IfNotPresent
      args: ["garbage-collect", "/config/distribution.yaml"]
      {{- if include "embedded_registry.ca_bundle" (dict "v" $v) }}
      env:
        # The S3 endpoint's CA, as the registry trusts it.
        - name: SSL_CERT_FILE
          value: {{ include "embedded_registry.pki_dir" . }}/upstream-ca.crt
      {{- end }}
      resources:
        requests:
          cpu: 20m
          memory: 64Mi
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities:
          drop: ["ALL"]
      volumeMounts:
        - {name: config, mountPath: /config, readOnly: true}
        - {name: pki, mountPath: /pki, readOnly: true}
        - {name: data, mountPath: /data}
  {{- end }}
  containers:
    - name: distribution
      image: {{ include "embedded_registry.image" (dict "ctx" .ctx "name" "distribution") }}
      imagePullPolicy: IfNotPresent
      args: ["serve", "/config/distribution.yaml"]
      {{- if include "embedded_registry.ca_bundle" (dict "v" .ctx.Values.embeddedRegistry) }}
      env:
        # proxy.ca and the S3 CA: the upstream (and its token realm) and the S3 endpoint
        # are verified against this bundle alone.
        - name: SSL_CERT_FILE
          value: {{ include "embedded_registry.pki_dir" . }}/upstream-ca.crt
      {{- end }}
      ports:
        - name: registry
          containerPort: 5001
          protocol: TCP
      livenessProbe:
        tcpSocket:
          host: {{ .m.internalIP | quote }}
          port: 5001
        periodSeconds: 10
        failureThreshold: 6
      readinessProbe:
        tcpSocket:
          host: {{ .m.internalIP | quote }}
          port: 5001
        periodSeconds: 5
      resources:
        requests:
          cpu: 20m
          memory: 64Mi
          ephemeral-storage: 50Mi
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities:
          drop: ["ALL"]
      volumeMounts:
        - {name: config, mountPath: /config, readOnly: true}
        - {name: pki, mountPath: /pki, readOnly: true}
        - {name: data, mountPath: /data}
    - name: auth
      image: {{ include "embedded_registry.image" (dict "ctx" .ctx "name" "dockerAuth") }}
      imagePullPolicy: IfNotPresent
      args: ["/config/auth.yaml"]
      ports:
        - name: auth
          containerPort: 5051
          protocol: TCP
      livenessProbe:
        tcpSocket:
          host: {{ .m.internalIP | quote }}
          port: 5051
        periodSeconds: 10
        failureThreshold: 6
      readinessProbe:
        tcpSocket:
          host: {{ .m.internalIP | quote }}
          port: 5051
        periodSeconds: 5
      resources:
        requests:
          cpu: 10m
          memory: 32Mi
          ephemeral-storage: 10Mi
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities:
          drop: ["ALL"]
      volumeMounts:
        - {name: config, mountPath: /config, readOnly: true}
        - {name: pki, mountPath: /pki, readOnly: true}
    {{- if include "embedded_registry.warm_list" .ctx }}
    # Keeps every image of the running release in this master's cache: pulls each
    # through the registry beside it (which stores what it proxies), reads the cache
    # from the data directory (read-only), signs its own pull-only tokens with the
    # token key docker_auth uses (no password), and writes its progress to /warm for
    # the node hook. Reads /config/warm-images.json again when it changes.
    - name: warm
      image: {{ include "embedded_registry.image" (dict "ctx" .ctx "name" "manager") }}
      imagePullPolicy: IfNotPresent
      command: ["/usr/bin/embedded-registry", "warm"]
      args:
        - --config=/config/distribution.yaml
        - --list=/config/warm-images.json
        - --pki=/pki
        - --progress=/warm/progress.json
        - --concurrency={{ (.ctx.Values.embeddedRegistry.proxy | default dict).warmupConcurrency | default 4 }}
        - --interval=10m
      resources:
        requests:
          cpu: 10m
          memory: 32Mi
          ephemeral-storage: 10Mi
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities:
          drop: ["ALL"]
      volumeMounts:
        - {name: config, mountPath: /config, readOnly: true}
        - {name: pki, mountPath: /pki, readOnly: true}
        - {name: data, mountPath: /data, readOnly: true}
        - {name: warm, mountPath: /warm}
    {{- end }}
  volumes:
    - name: config
      hostPath:
        path: {{ include "embedded_registry.host_config_dir" . }}
        type: Directory
    - name: pki
      hostPath:
        path: {{ include "embedded_registry.host_pki_dir" . }}
        type: Directory
    - name: data
      hostPath:
        path: {{ include "embedded_registry.host_data_dir" . }}
        type: DirectoryOrCreate
  {{- if include "embedded_registry.warm_list" .ctx }}
    # Created by the node hook, owned by the pod's user.
    - name: warm
      hostPath:
        path: {{ include "embedded_registry.host_warm_dir" . }}
        type: DirectoryOrCreate
  {{- end }}
{{- end -}}
