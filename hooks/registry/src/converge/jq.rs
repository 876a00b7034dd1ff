//! jq programs (binding `jqFilter`s and `JQPatch`), run by the real `jq` as the runners
//! run theirs, so filters behave here exactly as in a cluster.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

fn jq(program: &str, input: &Value) -> Result<Value> {
    let mut child = Command::new("jq")
        .args(["-c", program])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run jq (install it: apt-get install jq)")?;
    let mut stdin = child.stdin.take().expect("piped");
    let body = input.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(body.as_bytes()));
    let out = child.wait_with_output().context("jq did not finish")?;
    let _ = writer.join();
    if !out.status.success() {
        bail!(
            "jq {program:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("jq {program:?}: output is not one JSON value"))
}

/// Applies `filter` to each object; each result is the filter's first output, or null.
pub fn map_filter(filter: &str, objects: &[Value]) -> Result<Vec<Value>> {
    if objects.is_empty() {
        return Ok(vec![]);
    }
    let program = format!("map([{filter}] | .[0])");
    match jq(&program, &Value::Array(objects.to_vec()))? {
        Value::Array(items) if items.len() == objects.len() => Ok(items),
        _ => bail!("jqFilter {filter:?}: unexpected output shape"),
    }
}

/// Runs a `JQPatch` program on one object.
pub fn run(filter: &str, object: &Value) -> Result<Value> {
    jq(filter, object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_each_object_and_nulls_empty_results() {
        let objs = vec![json!({"a": 1}), json!({"b": 2})];
        assert_eq!(
            map_filter(".a", &objs).unwrap(),
            vec![json!(1), json!(null)]
        );
        assert_eq!(
            map_filter("empty", &objs).unwrap(),
            vec![json!(null), json!(null)]
        );
        assert!(map_filter(".a |||", &objs).is_err());
    }
}
