//! Unit tests of `state`.

use super::*;

fn tree(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((rel, fs::read_to_string(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_commit_switches_the_whole_tree_and_keeps_the_lock_inode() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("state");
    let s = StateDir::open(&dir, LOCK_WAIT).unwrap();
    let ino = fs::metadata(dir.join(LOCK_FILE)).unwrap().ino();
    let changed = s
        .commit(|st| {
            fs::create_dir_all(st.join("objects/ns")).unwrap();
            fs::write(st.join("objects/ns/a.json"), "a1").unwrap();
            fs::write(st.join("values.json"), "v1").unwrap();
            Ok(true)
        })
        .unwrap();
    assert!(changed);
    assert_eq!(fs::metadata(dir.join(LOCK_FILE)).unwrap().ino(), ino);
    assert!(!root.path().join("state.new").exists());
    let s = StateDir::open(&dir, LOCK_WAIT).unwrap();
    s.commit(|st| {
        assert_eq!(
            fs::read_to_string(st.join("objects/ns/a.json")).unwrap(),
            "a1"
        );
        fs::remove_file(st.join("values.json")).unwrap();
        fs::write(st.join("objects/ns/b.json"), "b1").unwrap();
        Ok(true)
    })
    .unwrap();
    assert_eq!(
        tree(&dir),
        vec![
            (".lock".into(), String::new()),
            ("objects/ns/a.json".into(), "a1".into()),
            ("objects/ns/b.json".into(), "b1".into()),
        ]
    );
    assert_eq!(fs::metadata(dir.join(LOCK_FILE)).unwrap().ino(), ino);
}

/// A state directory (`<root>/state`) after one run that wrote `values.json`.
fn committed_state() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("state");
    StateDir::open(&dir, LOCK_WAIT)
        .unwrap()
        .commit(|st| {
            fs::write(st.join("values.json"), "v1").unwrap();
            Ok(true)
        })
        .unwrap();
    (root, dir)
}

#[test]
fn a_failed_write_leaves_the_state_and_no_staging() {
    let (root, dir) = committed_state();
    let before = tree(&dir);
    let err = StateDir::open(&dir, LOCK_WAIT)
        .unwrap()
        .commit(|st| {
            hook_sdk::fsutil::write_atomic(&st.join("values.json"), b"v2").unwrap();
            bail!("disk full")
        })
        .unwrap_err();
    assert!(err.to_string().contains("disk full"));
    assert_eq!(tree(&dir), before);
    assert!(!root.path().join("state.new").exists());
}

#[test]
fn a_failed_first_run_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("state");
    let s = StateDir::open(&dir, LOCK_WAIT).unwrap();
    let hook = s.hook_dir().unwrap();
    assert_eq!(
        fs::metadata(hook.path()).unwrap().permissions().mode() & 0o777,
        0o700
    );
    drop(hook);
    drop(s);
    assert!(!dir.exists());
}

#[test]
fn leftovers_of_a_killed_run_are_removed_and_foreign_ones_refused() {
    let (root, dir) = committed_state();
    // What a kill leaves: a hook input directory and a staging directory.
    fs::create_dir(dir.join(".hook-abc")).unwrap();
    fs::write(dir.join(".hook-abc/values.json"), "secret").unwrap();
    fs::create_dir(root.path().join("state.new")).unwrap();
    fs::hard_link(dir.join(LOCK_FILE), root.path().join("state.new/.lock")).unwrap();
    fs::write(root.path().join("state.new/values.json"), "half").unwrap();
    let s = StateDir::open(&dir, LOCK_WAIT).unwrap();
    assert!(!dir.join(".hook-abc").exists());
    assert!(!root.path().join("state.new").exists());
    drop(s);
    // Someone else's directory of that name is not removed.
    fs::create_dir(root.path().join("state.new")).unwrap();
    fs::write(root.path().join("state.new/keep"), "x").unwrap();
    let err = StateDir::open(&dir, LOCK_WAIT).err().unwrap();
    assert!(err.to_string().contains("move it away"), "{err}");
    assert!(root.path().join("state.new/keep").exists());
}

#[test]
fn a_second_converge_waits_for_the_lock_then_gives_up_with_one_line() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("state");
    let first = StateDir::open(&dir, LOCK_WAIT).unwrap();
    let err = StateDir::open(&dir, Duration::from_millis(50))
        .err()
        .unwrap();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(".lock") && msg.contains("another converge"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
    drop(first);
    assert!(StateDir::open(&dir, Duration::from_millis(50)).is_ok());
}
