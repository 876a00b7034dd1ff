"""Rotation of old releases (`embedded-registry rotate`) against a real mirror: the
Debian distribution server with TLS and token auth, images built with umoci and pushed
with skopeo, garbage collection by the real `garbage-collect` (never --delete-untagged),
pulls checked with skopeo afterwards."""
import json
import subprocess

import pytest

from conftest import BIN
from tools.mirror_fixture import ROOT, build_mirror
from tools.processes import free_port
from tools.registry import OWN_CA, Registry, password

DROPPED = ["v1.60.0", "v1.62.0"]
KEPT = ["v1.61.0", "v1.63.0", "v1.64.0", "v1.65.0"]


def rotate(reg, tmp_path, *args, user="pusher", host=None):
    pw = tmp_path / f"{user}.pw"
    pw.write_text(password(user) + "\n")
    cmd = [str(BIN), "rotate", "--registry", f"https://{host or reg.host}", "--path", f"/{ROOT}",
           "--user", user, "--password-file", str(pw), "--ca-file", str(reg.ca_file), "--json", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin"})
    assert password(user) not in p.stdout + p.stderr
    report = json.loads(p.stdout) if p.stdout.strip() else None
    return p.returncode, report, p.stderr


def refs(pushed, dropped):
    """Every ref of the fixture that belongs to `dropped` releases (True) or not (False)."""
    out = {}
    for tag, d in pushed["releases"].items():
        out[f"{ROOT}:{tag}"] = tag in dropped
        out[f"{ROOT}@{d}"] = tag in dropped
        for child in pushed["children"].get(tag, []):
            out[f"{ROOT}@{child}"] = tag in dropped
    for repo, tags in pushed["install"].items():
        for tag, d in tags.items():
            out[f"{ROOT}/{repo}:{tag}"] = tag in dropped
    for name, d in pushed["modules"].items():
        out[f"{ROOT}@{d}"] = name in ("mod-b-v1", "mod-c-old")
    for name, (tag, d) in pushed["signatures"].items():
        out[f"{ROOT}:{tag}"] = name == "mod-c-old"
    for ch in pushed["channels"]:
        out[f"{ROOT}/release-channel:{ch}"] = False
    return out


@pytest.fixture
def mirror(tmp_path):
    with Registry(tmp_path / "reg", tls=OWN_CA) as reg:
        reg.pushed = build_mirror(reg, tmp_path / "build")
        yield reg


def test_keep_three_retained_pull_dropped_gone_disk_drops_second_run_is_empty(tmp_path, mirror):
    reg = mirror
    rc, plan, err = rotate(reg, tmp_path, "--keep", "3", "--dry-run")
    assert rc == 0, err
    p = plan["plan"]
    assert [k["tag"] for k in p["kept"]] == ["v1.65.0", "v1.64.0", "v1.63.0", "v1.61.0"]
    assert "channel:stable" in p["kept"][3]["reasons"]
    assert sorted(p["dropped"]) == DROPPED
    assert len(p["deletions"]) == 11 and p["freedBytes"] > 400 * 1024
    assert plan["stats"]["repeatedRequests"] == 0 and plan["stats"]["referrersApi"] is False
    # The dry run deleted nothing.
    assert reg.pull(f"{ROOT}:v1.60.0", tmp_path / "dry").returncode == 0

    rc, applied, err = rotate(reg, tmp_path, "--keep", "3", "--apply")
    assert rc == 0, err
    assert applied["applied"]["deleted"] == 11 and applied["applied"]["failed"] is None

    before = reg.disk_usage()
    reg.stop_registry()
    gc_log = reg.garbage_collect()
    assert "blob eligible for deletion" in gc_log
    reg.start()
    after = reg.disk_usage()
    assert after < before - 400 * 1024, (before, after)

    for i, (ref, gone) in enumerate(sorted(refs(reg.pushed, DROPPED).items())):
        r = reg.pull(ref, tmp_path / f"pull-{i}")
        if gone:
            assert r.returncode != 0 and "manifest unknown" in r.stderr.lower(), (ref, r.stderr)
        else:
            assert r.returncode == 0, (ref, r.stderr)

    for action in ("--dry-run", "--apply"):
        rc, again, err = rotate(reg, tmp_path, "--keep", "3", action)
        assert rc == 0, err
        assert again["plan"]["deletions"] == [] and sorted(again["plan"]["dropped"]) == []
        assert [k["tag"] for k in again["plan"]["kept"]] == ["v1.65.0", "v1.64.0", "v1.63.0", "v1.61.0"]


def test_running_release_is_kept_and_human_output(tmp_path, mirror):
    pw = tmp_path / "pusher.pw"
    pw.write_text(password("pusher"))
    p = subprocess.run([str(BIN), "rotate", "--registry", f"https://{mirror.host}", "--path", f"/{ROOT}", "--keep", "1",
                        "--keep-release", "v1.62.0", "--user", "pusher", "--password-file", str(pw), "--ca-file",
                        str(mirror.ca_file), "--dry-run"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "keep    v1.62.0 (running)" in p.stdout
    assert "drop    v1.60.0" in p.stdout and "drop    v1.62.0" not in p.stdout
    assert "dry run: nothing was deleted" in p.stdout


def test_a_release_without_digests_file_stops_before_deleting(tmp_path):
    with Registry(tmp_path / "reg", tls=OWN_CA) as reg:
        build_mirror(reg, tmp_path / "build", releases=["v1.60.0", "v1.61.0", "v1.62.0", "v1.63.0"],
                     without_digests=["v1.61.0"])
        for action in ("--dry-run", "--apply"):
            rc, r, _ = rotate(reg, tmp_path, "--keep", "1", "--min-age", "0", action)
            assert rc == 1
            assert r["failure"]["stage"] == "plan" and "v1.61.0" in r["failure"]["message"]
            assert "images_digests.json" in r["failure"]["message"] and "nothing was deleted" in r["failure"]["message"]
            assert "applied" not in r
        assert reg.pull(f"{ROOT}:v1.60.0", tmp_path / "still").returncode == 0


def test_unreachable_registry(tmp_path):
    ca = tmp_path / "ca.crt"
    from tools.certs import CA
    ca.write_text(CA().pem())
    p = subprocess.run([str(BIN), "rotate", "--registry", f"https://127.0.0.1:{free_port()}", "--path", "/deckhouse/ee",
                        "--keep", "3", "--ca-file", str(ca), "--apply", "--json"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 1
    r = json.loads(p.stdout)
    assert r["failure"]["stage"] == "connect" and r["failure"]["kind"] == "connect"
    assert "nothing was deleted" in r["failure"]["message"]


def test_a_deletion_failing_halfway_stops_and_a_rerun_resumes(tmp_path):
    # `halfway` may delete in the install repositories but only pull from the root.
    acl = {"pusher": [{"actions": ["*"]}], "puller": [{"actions": ["pull"]}],
           "halfway": [{"name": f"{ROOT}/install", "actions": ["*"]},
                       {"name": f"{ROOT}/install-standalone", "actions": ["*"]},
                       {"actions": ["pull"]}]}
    with Registry(tmp_path / "reg", tls=OWN_CA, acl=acl) as reg:
        reg.pushed = build_mirror(reg, tmp_path / "build")
        rc, r, _ = rotate(reg, tmp_path, "--keep", "3", "--apply", user="puller")
        assert rc == 1 and r["applied"]["deleted"] == 0 and r["failure"]["stage"] == "apply"
        assert "delete right" in r["failure"]["message"]

        rc, r, _ = rotate(reg, tmp_path, "--keep", "3", "--apply", user="halfway")
        assert rc == 1
        a = r["applied"]
        assert a["deleted"] == 4 and a["notAttempted"] == 6, a
        assert a["failed"]["repository"] == ROOT and a["failed"]["failure"]["kind"] == "denied"
        assert "stopped after 4 of 11 deletions" in r["failure"]["message"]
        assert "run again to resume" in r["failure"]["message"]
        # Nothing in the root repository was touched; the install tags are gone.
        assert reg.pull(f"{ROOT}:v1.60.0", tmp_path / "root").returncode == 0
        assert reg.pull(f"{ROOT}/install:v1.60.0", tmp_path / "inst").returncode != 0

        rc, r, err = rotate(reg, tmp_path, "--keep", "3", "--apply")
        assert rc == 0, err
        assert r["applied"]["deleted"] == 7 and len(r["plan"]["deletions"]) == 7
        rc, r, _ = rotate(reg, tmp_path, "--keep", "3", "--dry-run")
        assert rc == 0 and r["plan"]["deletions"] == []


@pytest.mark.parametrize("args,field", [
    (["--keep", "0", "--dry-run"], "--keep"),
    (["--keep", "3"], "--dry-run"),
    (["--keep", "3", "--dry-run", "--apply"], "--apply"),
    (["--keep", "3", "--dry-run", "--min-age", "soon"], "--min-age"),
    (["--keep", "3", "--dry-run", "--keep-release", "latest"], "--keep-release"),
])
def test_bad_arguments_exit_2_with_one_line(args, field):
    p = subprocess.run([str(BIN), "rotate", "--registry", "https://127.0.0.1:1", "--path", "/deckhouse/ee", *args],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and p.stdout == ""
    assert field in p.stderr, p.stderr


def test_bad_registry_and_path_arguments():
    for extra, field in [(["--registry", "127.0.0.1:5001", "--path", "/p"], "--registry"),
                         (["--registry", "https://h:1/p", "--path", "/p"], "--registry"),
                         (["--registry", "https://h:1", "--path", "/Bad Path"], "--path")]:
        p = subprocess.run([str(BIN), "rotate", *extra, "--keep", "1", "--dry-run"], capture_output=True, text=True,
                           timeout=30)
        assert p.returncode == 2 and p.stdout == "" and len(p.stderr.strip().splitlines()) == 1
        assert field in p.stderr
