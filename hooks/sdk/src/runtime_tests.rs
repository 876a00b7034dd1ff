//! Unit tests of `runtime`.

use super::*;
use crate::config::HookConfig;
use std::fs;

fn setting_hook() -> Hook {
    Hook::new(
        HookConfig {
            name: "setter".into(),
            before_helm: Some(1),
            ..Default::default()
        },
        |input| {
            if input.values.get("m.fail").is_some() {
                anyhow::bail!("asked to fail");
            }
            input.values.set("m.internal.x", &1)?;
            input.metrics.set("", "m_x", 1.0, &[]);
            Ok(())
        },
    )
}

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new(values: &str) -> (Self, IoPaths) {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("bc.json"), r#"[{"binding":"beforeHelm"}]"#).unwrap();
        fs::write(dir.path().join("values.json"), values).unwrap();
        fs::write(dir.path().join("config.json"), "{}").unwrap();
        let p = |n: &str| Some(dir.path().join(n));
        let io = IoPaths {
            binding_context: p("bc.json"),
            values: p("values.json"),
            config_values: p("config.json"),
            values_patch: p("values-patch.json"),
            config_values_patch: p("config-patch.json"),
            kubernetes_patch: p("k8s.json"),
            metrics: p("metrics.json"),
        };
        (Dir { dir }, io)
    }

    fn outputs(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !["bc.json", "values.json", "config.json"].contains(&n.as_str()))
            .collect();
        names.sort();
        names
    }
}

/// The variables a runner sets are the runner contract's names (addon-operator's
/// and shell-operator's), and only the paths that are set.
#[test]
fn io_paths_name_the_runner_variables() {
    let all = IoPaths {
        binding_context: Some("a".into()),
        values: Some("b".into()),
        config_values: Some("c".into()),
        values_patch: Some("d".into()),
        config_values_patch: Some("e".into()),
        kubernetes_patch: Some("f".into()),
        metrics: Some("g".into()),
    };
    let names: Vec<(&str, String)> = all
        .vars()
        .into_iter()
        .map(|(v, p)| (v, p.display().to_string()))
        .collect();
    let want = [
        ("BINDING_CONTEXT_PATH", "a"),
        ("VALUES_PATH", "b"),
        ("CONFIG_VALUES_PATH", "c"),
        ("VALUES_JSON_PATCH_PATH", "d"),
        ("CONFIG_VALUES_JSON_PATCH_PATH", "e"),
        ("KUBERNETES_PATCH_PATH", "f"),
        ("METRICS_PATH", "g"),
    ];
    assert_eq!(
        names,
        want.map(|(v, p)| (v, p.to_string())).to_vec(),
        "names and order"
    );
    let shell = IoPaths {
        binding_context: Some("a".into()),
        metrics: Some("g".into()),
        ..Default::default()
    };
    let set: Vec<&str> = shell.vars().into_iter().map(|(v, _)| v).collect();
    assert_eq!(set, ["BINDING_CONTEXT_PATH", "METRICS_PATH"]);
}

#[test]
fn a_successful_run_writes_its_outputs_and_clears_stale_ones() {
    let (d, io) = Dir::new(r#"{"m":{}}"#);
    fs::write(io.kubernetes_patch.as_ref().unwrap(), "stale").unwrap();
    execute(&setting_hook(), &io, true).unwrap();
    assert_eq!(
        d.outputs(),
        ["k8s.json", "metrics.json", "values-patch.json"]
    );
    assert_eq!(
        fs::read_to_string(io.kubernetes_patch.as_ref().unwrap()).unwrap(),
        ""
    );
    let patch = fs::read_to_string(io.values_patch.unwrap()).unwrap();
    let ops: Value = serde_json::from_str(&patch).unwrap();
    assert_eq!(
        ops[1],
        json!({"op": "add", "path": "/m/internal/x", "value": 1})
    );
}

#[test]
fn failures_write_nothing() {
    let hook = setting_hook();
    let (d, io) = Dir::new(r#"{"m":{"fail":true}}"#);
    let e = execute(&hook, &io, true).unwrap_err();
    assert!(e.to_string().contains("asked to fail"));
    assert!(d.outputs().is_empty());

    let (d, io) = Dir::new(r#"{"m": "#);
    let e = format!("{:#}", execute(&hook, &io, true).unwrap_err());
    assert!(
        e.contains("VALUES_PATH=") && e.contains("malformed JSON"),
        "{e}"
    );
    assert!(d.outputs().is_empty());

    let (d, mut io) = Dir::new(r#"{"m":{}}"#);
    io.binding_context = Some(d.dir.path().join("missing.json"));
    let e = format!("{:#}", execute(&hook, &io, true).unwrap_err());
    assert!(
        e.contains("BINDING_CONTEXT_PATH=") && e.contains("missing.json"),
        "{e}"
    );
    assert!(d.outputs().is_empty());

    let (d, mut io) = Dir::new(r#"{"m":{}}"#);
    io.values = None;
    let e = format!("{:#}", execute(&hook, &io, true).unwrap_err());
    assert!(e.contains("VALUES_PATH is not set"), "{e}");
    assert!(d.outputs().is_empty());

    let (d, mut io) = Dir::new(r#"{"m":{}}"#);
    io.values_patch = None;
    let e = format!("{:#}", execute(&hook, &io, true).unwrap_err());
    assert!(e.contains("VALUES_JSON_PATCH_PATH is not set"), "{e}");
    assert!(
        d.outputs().is_empty(),
        "metrics were staged but not committed"
    );
}

#[test]
fn list_and_config_shapes() {
    let r = Registry::new("embedded-registry", vec![setting_hook()]);
    assert_eq!(r.list_text(), "Found 1 items:\n0 - setter\n");
    let c = r.batch_config().unwrap();
    assert_eq!(c["version"], "v1");
    assert_eq!(
        c["hooks"][0]["metadata"]["path"],
        "embedded-registry/setter"
    );
    assert_eq!(c["hooks"][0]["beforeHelm"], 1);
}

#[test]
fn error_lines_are_single_json_lines() {
    let l = error_line("h", &anyhow::anyhow!("a\nb").context("ctx"));
    assert!(!l.contains('\n'));
    let v: Value = serde_json::from_str(&l).unwrap();
    assert_eq!(v["msg"], "ctx: a b");
}

#[test]
fn dump_writes_the_config_document_where_asked() {
    let r = Registry::new("embedded-registry", vec![setting_hook()]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out/hook_config.json");
    let e = format!("{:#}", r.dump(&path, false).unwrap_err());
    assert!(
        e.contains("does not exist") && e.contains("CREATE_FILES=true"),
        "{e}"
    );
    assert!(
        !dir.path().join("out").exists(),
        "nothing created without CREATE_FILES"
    );
    r.dump(&path, true).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(
        text.ends_with('\n') && text.lines().count() == 1,
        "{text:?}"
    );
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        doc,
        r.batch_config().unwrap(),
        "the document `hook config` prints"
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o644
    );
    r.dump(&path, false).unwrap();
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        text,
        "a second dump changes nothing"
    );
    assert_eq!(
        fs::read_dir(dir.path().join("out")).unwrap().count(),
        1,
        "no temporary file left"
    );
    assert!(go_bool("CREATE_FILES", "True").unwrap());
    assert!(!go_bool("CREATE_FILES", "0").unwrap());
    let e = go_bool("CREATE_FILES", "yes").unwrap_err().to_string();
    assert!(e.contains("CREATE_FILES=\"yes\""), "{e}");
}

#[test]
fn errors_are_typed_and_the_handler_error_passes_through() {
    let (d, io) = Dir::new(r#"{"m":{"fail":true}}"#);
    let e = execute(&setting_hook(), &io, true).unwrap_err();
    assert!(matches!(e, RunError::Handler(_)), "{e:?}");
    assert_eq!(e.to_string(), "asked to fail");
    let (_d2, mut io2) = Dir::new(r#"{"m":{}}"#);
    io2.binding_context = None;
    assert!(matches!(
        execute(&setting_hook(), &io2, true).unwrap_err(),
        RunError::MissingInput {
            var: "BINDING_CONTEXT_PATH"
        }
    ));
    fs::write(d.dir.path().join("bc.json"), "").unwrap();
    let (_d3, mut io3) = Dir::new(r#"{"m":{}}"#);
    io3.binding_context = Some(d.dir.path().join("bc.json"));
    let e = execute(&setting_hook(), &io3, true).unwrap_err();
    assert!(
        matches!(
            e,
            RunError::Contexts {
                error: ContextError::Empty,
                ..
            }
        ),
        "{e:?}"
    );
    let r = Registry::new("x", vec![setting_hook()]);
    assert!(matches!(
        r.classic_config("nope", RunnerKind::Module),
        Err(RunError::NoHook { .. })
    ));
}
