//! jq programs (binding `jqFilter`s and `JQPatch`): the SDK's, run by the real `jq` as
//! the runners run theirs (`hook_sdk::jq`).

pub use hook_sdk::jq::{map_filter, run};
