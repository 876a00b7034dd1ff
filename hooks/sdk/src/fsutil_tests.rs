//! Unit tests of `fsutil`.

use super::*;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};

#[test]
fn files_are_private_unless_a_mode_is_asked_for() {
    // A hook's output files (a values patch may hold private keys) take the default.
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("values-patch.json");
    stage_with(&private, b"[]", None, false)
        .unwrap()
        .commit()
        .unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&private), 0o600);
    let shared = dir.path().join("rendered.yaml");
    stage(&shared, b"x", Some(0o644)).unwrap().commit().unwrap();
    assert_eq!(mode(&shared) & 0o600, 0o600);
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn staged_files_appear_only_on_commit() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.json");
    let staged = stage(&target, b"new", Some(0o600)).unwrap();
    assert!(!target.exists());
    drop(staged);
    assert!(!target.exists());
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "temp file cleaned up"
    );
    stage(&target, b"new", Some(0o600))
        .unwrap()
        .commit()
        .unwrap();
    assert_eq!(fs::read(&target).unwrap(), b"new");
    assert_eq!(mode(&target), 0o600);
}

/// The name the temporary file had before it was random (`.<name>.tmp-<pid>`): a
/// link placed there made the write, chmod and chown go to the link's target.
#[test]
fn a_link_at_the_old_temporary_name_is_never_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    fs::write(&victim, "precious").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
    let target = dir.path().join("out.json");
    let old_tmp = dir
        .path()
        .join(format!(".out.json.tmp-{}", std::process::id()));
    symlink(&victim, &old_tmp).unwrap();
    stage(&target, b"new", Some(0o600))
        .unwrap()
        .commit()
        .unwrap();
    assert_eq!(fs::read(&target).unwrap(), b"new");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(mode(&victim), 0o644);
    assert!(fs::symlink_metadata(&old_tmp)
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn temporary_names_are_fresh_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dir::open(dir.path()).unwrap();
    let a = d.stage("f", b"1", None, false).unwrap();
    let b = d.stage("f", b"2", None, false).unwrap();
    assert_ne!(a.path(), b.path());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn a_link_at_the_target_is_replaced_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    fs::write(&victim, "precious").unwrap();
    symlink(&victim, dir.path().join("out")).unwrap();
    let d = Dir::open(dir.path()).unwrap();
    let e = d.holds("out", b"precious").unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    d.stage("out", b"new", Some(0o600), true)
        .unwrap()
        .commit()
        .unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(d.kind("out").unwrap(), Some(Kind::File));
}

#[test]
fn walking_refuses_a_link_below_the_start_but_the_start_may_be_one() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    let victim = dir.path().join("victim");
    fs::create_dir_all(real.join("a")).unwrap();
    fs::create_dir(&victim).unwrap();
    symlink(&victim, real.join("a/b")).unwrap();
    let root_link = dir.path().join("root");
    symlink(&real, &root_link).unwrap();
    let root = Dir::open(&root_link).unwrap();
    for create in [false, true] {
        let e = root.walk("a/b/c", create).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "{}: a symbolic link",
                root_link.join("a/b").display()
            )),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }
    assert_eq!(fs::read_dir(&victim).unwrap().count(), 0, "nothing created");
    assert!(root.walk("a/x/y", false).unwrap().is_none());
    let made = root.walk("a/x/y", true).unwrap().unwrap();
    assert_eq!(made.path(), root_link.join("a/x/y"));
    assert!(real.join("a/x/y").is_dir());
    fs::write(real.join("a/file"), "").unwrap();
    let e = root.walk("a/file/z", true).unwrap_err().to_string();
    assert!(e.contains("a regular file where a directory"), "{e}");
    assert!(root.walk("../escape", true).is_err());
}

#[test]
fn removal_never_goes_through_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    fs::write(&victim, "precious").unwrap();
    symlink(&victim, dir.path().join("link")).unwrap();
    fs::write(dir.path().join("plain"), "x").unwrap();
    let d = Dir::open(dir.path()).unwrap();
    assert!(d.remove_file("link").is_err());
    assert!(d.remove_file("plain").unwrap());
    assert!(!d.remove_file("plain").unwrap());
    assert!(d.remove_file("../victim").is_err(), "one name only");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(
        d.entries().unwrap(),
        vec![
            (OsString::from("link"), Kind::Symlink),
            (OsString::from("victim"), Kind::File)
        ]
    );
}

#[test]
fn holds_compares_content_without_reading_more_than_it() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("f"), "abc").unwrap();
    let d = Dir::open(dir.path()).unwrap();
    assert!(d.holds("f", b"abc").unwrap());
    assert!(!d.holds("f", b"abd").unwrap());
    assert!(!d.holds("f", b"ab").unwrap());
    assert!(!d.holds("missing", b"").unwrap());
    fs::create_dir(dir.path().join("sub")).unwrap();
    assert!(d.holds("sub", b"").is_err());
}
