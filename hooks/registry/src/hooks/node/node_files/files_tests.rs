//! Unit tests of [`super::apply`]: order, idempotence, refused keys and links.

use super::*;
use std::path::PathBuf;

fn files(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = [
        ("config.distribution.yaml", "version: 0.1\n"),
        ("pki.ca.crt", "CA\n"),
        ("manifest.embedded-registry.yaml", "kind: Pod\n"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        m.insert(k.to_string(), v.to_string());
    }
    m
}

#[test]
fn writes_then_skips_then_removes_in_order() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let a = apply(r, Some(&files(&[])), "h1", None).unwrap();
    assert_eq!(
        a.written,
        vec![
            "etc/kubernetes/registry/config/distribution.yaml",
            "etc/kubernetes/registry/pki/ca.crt",
            "etc/kubernetes/manifests/embedded-registry.yaml"
        ],
        "manifest last"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(r.join(PKI_DIR).join("ca.crt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(r.join(DATA_DIR).is_dir());
    let again = apply(r, Some(&files(&[])), "h1", None).unwrap();
    assert!(
        again.written.is_empty() && again.removed.is_empty(),
        "{again:?}"
    );
    let changed = apply(
        r,
        Some(&files(&[
            ("pki.ca.crt", "CA2\n"),
            ("pki.upstream-ca.crt", "k"),
        ])),
        "h2",
        None,
    )
    .unwrap();
    assert_eq!(
        changed.written,
        vec![
            "etc/kubernetes/registry/pki/ca.crt",
            "etc/kubernetes/registry/pki/upstream-ca.crt"
        ]
    );
    let fewer = apply(r, Some(&files(&[])), "h3", None).unwrap();
    assert_eq!(
        fewer.removed,
        vec!["etc/kubernetes/registry/pki/upstream-ca.crt"]
    );
    let gone = apply(r, None, "", None).unwrap();
    assert_eq!(
        gone.removed[0], "etc/kubernetes/manifests/embedded-registry.yaml",
        "manifest first"
    );
    assert_eq!(gone.removed.len(), 3);
    assert!(r.join(DATA_DIR).is_dir(), "data is kept");
}

#[test]
fn a_missing_host_root_is_created_for_a_secret_and_left_alone_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("host");
    assert_eq!(apply(&root, None, "", None).unwrap(), Applied::default());
    assert!(!root.exists());
    let a = apply(&root, Some(&files(&[])), "h", None).unwrap();
    assert_eq!(a.written.len(), 3);
}

#[test]
fn names_that_escape_are_refused_before_anything_is_written() {
    for bad in [
        "pki...",
        "pki./etc/passwd",
        "config...evil",
        "other.file",
        "pki.",
        "manifest..hidden",
    ] {
        let root = tempfile::tempdir().unwrap();
        let e = apply(root.path(), Some(&files(&[(bad, "x")])), "h", None).unwrap_err();
        assert!(e.to_string().contains("refusing"), "{bad}: {e}");
        assert_eq!(
            std::fs::read_dir(root.path()).unwrap().count(),
            0,
            "{bad}: nothing written"
        );
    }
}

#[test]
fn a_failure_before_the_manifest_leaves_no_manifest() {
    let root = tempfile::tempdir().unwrap();
    // A file where the PKI directory should be: writing PKI files fails.
    std::fs::create_dir_all(root.path().join("etc/kubernetes/registry")).unwrap();
    std::fs::write(root.path().join(PKI_DIR), "not a directory").unwrap();
    assert!(apply(root.path(), Some(&files(&[])), "h", None).is_err());
    assert!(!root
        .path()
        .join(MANIFEST_DIR)
        .join("embedded-registry.yaml")
        .exists());
}

#[test]
fn only_the_registry_s_own_manifest_and_known_files_are_accepted() {
    for (bad, needle) in [
        (
            "manifest.kube-apiserver.yaml",
            "manifest.* takes embedded-registry.yaml",
        ),
        (
            "manifest.evil.yaml",
            "manifest.* takes embedded-registry.yaml",
        ),
        (
            "config.kubelet.yaml",
            "config.* takes auth.yaml, distribution.yaml",
        ),
        ("pki.extra.key", "pki.* takes auth.crt"),
    ] {
        let root = tempfile::tempdir().unwrap();
        let manifests = root.path().join(MANIFEST_DIR);
        std::fs::create_dir_all(&manifests).unwrap();
        std::fs::write(manifests.join("kube-apiserver.yaml"), "apiserver\n").unwrap();
        let e = apply(root.path(), Some(&files(&[(bad, "x")])), "h", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("{bad:?}")) && e.contains(needle), "{e}");
        assert!(
            e.contains("refusing the whole Secret") && !e.contains('\n'),
            "{e}"
        );
        let left: Vec<_> = std::fs::read_dir(&manifests).unwrap().collect();
        assert_eq!(left.len(), 1, "{bad}: nothing written");
        assert_eq!(
            std::fs::read_to_string(manifests.join("kube-apiserver.yaml")).unwrap(),
            "apiserver\n"
        );
        assert!(!root.path().join("etc/kubernetes/registry").exists());
    }
    // Every key the chart renders is accepted.
    let chart: Vec<(String, &str)> = CONFIG_FILES
        .iter()
        .map(|f| (format!("config.{f}"), "c"))
        .chain(PKI_FILES.iter().map(|f| (format!("pki.{f}"), "p")))
        .collect();
    let chart: Vec<(&str, &str)> = chart.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let root = tempfile::tempdir().unwrap();
    let a = apply(root.path(), Some(&files(&chart)), "h", None).unwrap();
    assert_eq!(a.written.len(), CONFIG_FILES.len() + PKI_FILES.len() + 1);
}

use std::os::unix::fs::{symlink, PermissionsExt as _};

/// A victim directory outside the host root with one file (mode 0644) in it.
struct Victim {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Victim {
    fn new() -> Victim {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("victim");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("precious"), "keep me\n").unwrap();
        std::fs::set_permissions(
            path.join("precious"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        Victim { _dir: dir, path }
    }

    fn file(&self) -> PathBuf {
        self.path.join("precious")
    }

    /// The victim is as it was: one file, same content and mode.
    fn untouched(&self) {
        let names: Vec<_> = std::fs::read_dir(&self.path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["precious"], "nothing added or removed");
        assert_eq!(std::fs::read_to_string(self.file()).unwrap(), "keep me\n");
        let mode = std::fs::metadata(self.file()).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o644);
    }
}

/// A host root that already holds an installed registry (so removal has files to
/// remove), then `prepare` run on it.
fn installed(prepare: impl FnOnce(&Path)) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    apply(root.path(), Some(&files(&[])), "h", None).unwrap();
    prepare(root.path());
    root
}

fn replace_with_link(path: &Path, to: &Path) {
    if path.is_dir() {
        std::fs::remove_dir_all(path).unwrap();
    } else if path.exists() {
        std::fs::remove_file(path).unwrap();
    }
    symlink(to, path).unwrap();
}

fn refused(root: &Path, secret: Option<&BTreeMap<String, String>>, path: &Path) {
    let e = apply(root, secret, "h2", None).unwrap_err().to_string();
    assert!(e.starts_with(&path.display().to_string()), "{e}");
    assert!(e.contains("symbolic link") && !e.contains('\n'), "{e}");
}

#[test]
fn a_symlinked_config_dir_is_neither_written_nor_emptied() {
    let victim = Victim::new();
    let root = installed(|r| replace_with_link(&r.join(CONFIG_DIR), &victim.path));
    let r = root.path();
    let manifest = r.join(MANIFEST_DIR).join(MANIFEST_FILE);
    std::fs::remove_file(&manifest).unwrap();
    refused(r, Some(&files(&[])), &r.join(CONFIG_DIR));
    assert!(!manifest.exists(), "nothing written after the refusal");
    refused(r, None, &r.join(CONFIG_DIR));
    victim.untouched();
    assert!(r.join(PKI_DIR).join("ca.crt").exists(), "nothing removed");
}

#[test]
fn a_symlinked_parent_dir_is_refused() {
    let victim = Victim::new();
    let root = installed(|r| replace_with_link(&r.join("etc/kubernetes/registry"), &victim.path));
    let r = root.path();
    refused(r, Some(&files(&[])), &r.join("etc/kubernetes/registry"));
    refused(r, None, &r.join("etc/kubernetes/registry"));
    victim.untouched();
}

#[test]
fn a_link_at_a_temporary_or_file_name_is_never_written_through() {
    for name in [
        // The temporary name the hook used before (`.<file>.tmp-<pid>`).
        format!(".ca.crt.tmp-{}", std::process::id()),
        "ca.crt".to_string(),
        "token.key".to_string(),
    ] {
        let victim = Victim::new();
        let root = installed(|r| replace_with_link(&r.join(PKI_DIR).join(&name), &victim.file()));
        let r = root.path();
        let changed = files(&[("pki.ca.crt", "CA2\n"), ("pki.token.key", "K\n")]);
        refused(r, Some(&changed), &r.join(PKI_DIR).join(&name));
        refused(r, None, &r.join(PKI_DIR).join(&name));
        victim.untouched();
        assert_eq!(
            std::fs::read_to_string(r.join(MANIFEST_DIR).join(MANIFEST_FILE)).unwrap(),
            "kind: Pod\n",
            "{name}: nothing removed"
        );
    }
}

#[test]
fn a_symlinked_manifests_dir_or_manifest_is_refused() {
    let victim = Victim::new();
    let root = installed(|r| replace_with_link(&r.join(MANIFEST_DIR), &victim.path));
    let r = root.path();
    refused(r, Some(&files(&[])), &r.join(MANIFEST_DIR));
    refused(r, None, &r.join(MANIFEST_DIR));
    victim.untouched();
    assert!(r.join(CONFIG_DIR).join("distribution.yaml").exists());

    let victim = Victim::new();
    let root =
        installed(|r| replace_with_link(&r.join(MANIFEST_DIR).join(MANIFEST_FILE), &victim.file()));
    let r = root.path();
    let manifest = r.join(MANIFEST_DIR).join(MANIFEST_FILE);
    refused(r, Some(&files(&[])), &manifest);
    refused(r, None, &manifest);
    victim.untouched();
    assert!(std::fs::symlink_metadata(&manifest).unwrap().is_symlink());
}

#[test]
fn the_data_dir_is_created_without_following_links_and_an_existing_one_is_left_alone() {
    let victim = Victim::new();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir(r.join("opt")).unwrap();
    symlink(&victim.path, r.join("opt/deckhouse")).unwrap();
    refused(r, Some(&files(&[])), &r.join("opt/deckhouse"));
    victim.untouched();
    assert!(!r.join(MANIFEST_DIR).exists(), "refused before any file");

    // A data directory the administrator linked to another disk is used as it is.
    let disk = Victim::new();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("opt/deckhouse/registry")).unwrap();
    symlink(&disk.path, r.join(DATA_DIR)).unwrap();
    apply(r, Some(&files(&[])), "h", None).unwrap();
    // Only the storage layout distribution needs is added beside what was there.
    std::fs::remove_dir_all(disk.path.join("docker")).unwrap();
    disk.untouched();
    assert!(std::fs::symlink_metadata(r.join(DATA_DIR))
        .unwrap()
        .is_symlink());
}

#[test]
fn a_fresh_data_dir_holds_the_storage_layout_garbage_collection_needs() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    apply(r, Some(&files(&[])), "h", None).unwrap();
    for d in STORAGE_DIRS {
        assert!(r.join(DATA_DIR).join(d).is_dir(), "{d}");
    }
    // A second run finds them and changes nothing.
    let again = apply(r, Some(&files(&[])), "h", None).unwrap();
    assert!(again.written.is_empty() && again.removed.is_empty());
}
