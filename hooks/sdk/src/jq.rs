//! jq programs (binding `jqFilter`s and `JQPatch`), run by the real `jq` binary as the
//! runners run theirs (shell-operator uses libjq), so a filter behaves in tests and in
//! the local converge exactly as in a cluster.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

/// Why a jq program could not give a result.
#[derive(Debug, thiserror::Error)]
pub enum JqError {
    /// The `jq` binary could not be started.
    #[error("cannot run jq (install it: apt-get install jq): {error}")]
    Spawn {
        /// What the system said.
        error: std::io::Error,
    },
    /// `jq` did not finish cleanly (its output could not be collected).
    #[error("jq {program:?} did not finish: {error}")]
    Wait {
        /// The program run.
        program: String,
        /// What the system said.
        error: std::io::Error,
    },
    /// `jq` refused the program or failed on the input.
    #[error("jq {program:?}: {stderr}")]
    Failed {
        /// The program run.
        program: String,
        /// What jq printed on stderr, its lines joined by `; ` (errors are one line).
        stderr: String,
    },
    /// The output is not one JSON value.
    #[error("jq {program:?}: output is not one JSON value: {error}")]
    Output {
        /// The program run.
        program: String,
        /// The parse error.
        error: serde_json::Error,
    },
    /// A `jqFilter` mapped over objects did not give one result per object.
    #[error("jqFilter {filter:?}: unexpected output shape")]
    Shape {
        /// The binding's filter.
        filter: String,
    },
}

fn jq(program: &str, input: &Value) -> Result<Value, JqError> {
    let mut child = Command::new("jq")
        .args(["-c", program])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| JqError::Spawn { error })?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let body = input.to_string();
    // Written from another thread: jq may fill its stdout pipe before reading all input.
    let writer = std::thread::spawn(move || stdin.write_all(body.as_bytes()));
    let out = child.wait_with_output().map_err(|error| JqError::Wait {
        program: program.into(),
        error,
    })?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(JqError::Failed {
            program: program.into(),
            stderr: String::from_utf8_lossy(&out.stderr)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    serde_json::from_slice(&out.stdout).map_err(|error| JqError::Output {
        program: program.into(),
        error,
    })
}

/// Applies `filter` to each object in one jq process; each result is the filter's first
/// output for that object, or `null` when it gave none (as shell-operator keeps it).
pub fn map_filter(filter: &str, objects: &[Value]) -> Result<Vec<Value>, JqError> {
    if objects.is_empty() {
        return Ok(vec![]);
    }
    let program = format!("map([{filter}] | .[0])");
    match jq(&program, &Value::Array(objects.to_vec()))? {
        Value::Array(items) if items.len() == objects.len() => Ok(items),
        _ => Err(JqError::Shape {
            filter: filter.into(),
        }),
    }
}

/// Runs a `JQPatch` program on one object.
pub fn run(filter: &str, object: &Value) -> Result<Value, JqError> {
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
        let e = map_filter(".a |||", &objs).unwrap_err();
        assert!(matches!(e, JqError::Failed { .. }), "{e}");
        assert!(!e.to_string().contains('\n'), "{e}");
    }

    #[test]
    fn jq_patch_programs_run_on_one_object() {
        assert_eq!(
            run(".data = {}", &json!({"data": {"k": "v"}})).unwrap(),
            json!({"data": {}})
        );
        assert!(matches!(
            run(".[]", &json!([1, 2])).unwrap_err(),
            JqError::Output { .. }
        ));
    }
}
