//! Renders the chart with the real Helm engine (PyPI `helm-python-sdk`) through
//! `scripts/helm_render.py`, which also validates every object against the Kubernetes
//! schemas (`kubernetes-validate`, strict).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

/// Which Python runs the renderer: the flag, `EMBEDDED_REGISTRY_PYTHON`, the module's
/// `.venv` (made by `scripts/setup`), then `python3`.
pub fn python(explicit: Option<&Path>, module_dir: &Path) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("EMBEDDED_REGISTRY_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = module_dir.join(".venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

/// Renders the chart at `module_dir`; returns template path → manifest text.
pub fn render(
    python: &Path,
    module_dir: &Path,
    values: &Value,
    namespace: &str,
    kube_version: &str,
) -> Result<BTreeMap<String, String>> {
    let script = module_dir.join("scripts/helm_render.py");
    let mut child = Command::new(python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "cannot run {} (run scripts/setup, or set EMBEDDED_REGISTRY_PYTHON)",
                python.display()
            )
        })?;
    let request = json!({
        "chart": module_dir,
        "values": values,
        "release": crate::module::MODULE_NAME,
        "namespace": namespace,
        "kubeVersion": kube_version,
    })
    .to_string();
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || stdin.write_all(request.as_bytes()));
    let out = child
        .wait_with_output()
        .context("the renderer did not finish")?;
    let _ = writer.join();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no message");
        bail!("render: {line}");
    }
    #[derive(serde::Deserialize)]
    struct Reply {
        manifests: BTreeMap<String, String>,
    }
    let reply: Reply =
        serde_json::from_slice(&out.stdout).context("render: the renderer's reply is not JSON")?;
    Ok(reply.manifests)
}
