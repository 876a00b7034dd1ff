//! The hook contract of shell-operator and addon-operator, in Rust.
//!
//! A hook is a [`HookConfig`] (when it runs) plus a handler over a typed [`HookInput`]
//! (binding contexts, snapshots, values) that records its effects into collectors
//! (values patches, Kubernetes object operations, metrics). The [`runtime`] module turns
//! a list of hooks into a binary that speaks both runner protocols:
//!
//! * the module-sdk batch protocol (`hook list`, `hook config`, `hook run N`), which
//!   addon-operator uses for compiled module hooks;
//! * the classic protocol (`<hook> --config`, then `<hook>`), used by plain shell-operator.
//!
//! Handlers are pure: they read the input and write to collectors; files are read and
//! written only by the runtime, atomically, and only when the handler succeeded.
//!
//! A kubernetes binding's snapshot is built from cluster objects by [`bindings`] (kind,
//! name, namespace, label and field selectors, `jqFilter` run by the real `jq`): the
//! local converge and [`testing::HookTest::cluster_state`] use the same code, so a hook's
//! unit tests run its own selectors and filters.
//!
//! Errors are typed per module ([`config::ConfigError`], [`context::ContextError`],
//! [`values::ValuesError`], [`values::PatchError`], [`objects::ObjectsError`],
//! [`metrics::MetricsError`], [`fsutil::FsError`], [`bindings::BindingError`],
//! [`jq::JqError`], [`runtime::RunError`], [`testing::TestError`]); each message is one
//! line naming the file, variable, hook or binding at fault and never quotes a value. A
//! handler returns `anyhow::Result`; its error passes through [`runtime::RunError::Handler`]
//! unchanged.
//!
//! ```
//! use hook_sdk::{Hook, HookConfig, HookInput, KubernetesBinding};
//!
//! fn handler(input: &mut HookInput) -> anyhow::Result<()> {
//!     let names: Vec<String> = input.snapshots.get("nodes")?;
//!     input.values.set("myModule.internal.nodeNames", &names)?;
//!     Ok(())
//! }
//!
//! let hook = Hook::new(
//!     HookConfig {
//!         name: "node_names".into(),
//!         kubernetes: vec![KubernetesBinding {
//!             jq_filter: Some(".metadata.name".into()),
//!             ..KubernetesBinding::new("nodes", "v1", "Node")
//!         }],
//!         ..HookConfig::default()
//!     },
//!     handler,
//! );
//! let out = hook_sdk::testing::HookTest::new()
//!     .values(serde_json::json!({"myModule": {"internal": {}}}))
//!     .group_snapshot("nodes", vec![hook_sdk::testing::filtered("a"), hook_sdk::testing::filtered("b")])
//!     .run(&hook)
//!     .unwrap();
//! assert_eq!(out.values["myModule"]["internal"]["nodeNames"], serde_json::json!(["a", "b"]));
//! ```

#![warn(missing_docs)]

pub mod bindings;
pub mod config;
pub mod context;
pub mod fsutil;
pub mod jq;
pub mod log;
pub mod metrics;
pub mod objects;
pub mod runtime;
pub mod testing;
pub mod values;

pub use config::{
    FieldSelector, FieldSelectorRequirement, HookConfig, KubernetesBinding, LabelSelector,
    LabelSelectorRequirement, NamespaceSelector, ScheduleBinding, Settings, WatchEvent,
};
pub use context::{BindingContext, ContextType, SnapshotItem, Snapshots};
pub use log::Logger;
pub use metrics::MetricsCollector;
pub use objects::ObjectPatchCollector;
pub use values::PatchableValues;

/// The signature of a hook handler: reads the input, records effects into its collectors.
pub type Handler = fn(&mut HookInput) -> anyhow::Result<()>;

/// A hook: its configuration and its handler.
#[derive(Clone)]
pub struct Hook {
    /// When and on what the runner invokes the hook.
    pub config: HookConfig,
    /// The code that runs.
    pub handler: Handler,
}

impl Hook {
    /// Pairs a configuration with its handler.
    pub fn new(config: HookConfig, handler: Handler) -> Self {
        Hook { config, handler }
    }
}

/// Everything a handler sees and everything it may change.
pub struct HookInput {
    /// The binding contexts of this run, in the order the runner delivered them; their
    /// snapshots and Synchronization objects have moved to `snapshots`.
    pub contexts: Vec<BindingContext>,
    /// Snapshots by binding name, as of the last context of this run.
    pub snapshots: Snapshots,
    /// Module values (`{"global":..., "<module>":...}`); setting records a values patch.
    pub values: PatchableValues,
    /// Config values (the ModuleConfig settings); setting records a config values patch.
    pub config_values: PatchableValues,
    /// Kubernetes object operations to perform after the hook.
    pub objects: ObjectPatchCollector,
    /// Metric operations.
    pub metrics: MetricsCollector,
    /// Structured logger writing JSON lines to stderr.
    pub log: Logger,
}

impl HookInput {
    /// Builds an input from parsed contexts and values documents.
    pub fn new(
        hook_name: &str,
        mut contexts: Vec<BindingContext>,
        values: serde_json::Value,
        config_values: serde_json::Value,
    ) -> Self {
        let snapshots = Snapshots::take_from_contexts(&mut contexts);
        HookInput {
            contexts,
            snapshots,
            values: PatchableValues::new(values),
            config_values: PatchableValues::new(config_values),
            objects: ObjectPatchCollector::default(),
            metrics: MetricsCollector::default(),
            log: Logger::new(hook_name),
        }
    }

    /// The binding names of this run, e.g. `["onStartup"]` or `["main"]`.
    pub fn bindings(&self) -> impl Iterator<Item = &str> {
        self.contexts.iter().map(|c| c.binding.as_str())
    }
}
