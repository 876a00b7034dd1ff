"""`hook dump` of the batch binary, as module-sdk's has it: the `hook config` document
written to $HOOK_CONFIG_PATH (default out/hook_config.json under the working
directory), its directory created only with CREATE_FILES=true, `dump successfully` on
stdout."""
import json
import os
import stat

import jsonschema

from conftest import ROOT, run

BATCH_SCHEMA = json.loads((ROOT / "tests/schemas/module-sdk-batch-config.json").read_text())


def test_dump_writes_the_config_document_to_the_default_place(tmp_path):
    config = run(["hook", "config"], env={})
    assert config.returncode == 0, config.stderr
    refused = run(["hook", "dump"], env={}, cwd=tmp_path)
    assert refused.returncode == 1 and refused.stdout == ""
    line = json.loads(refused.stderr.strip())
    assert "out" in line["msg"] and "CREATE_FILES=true" in line["msg"], line
    assert not (tmp_path / "out").exists()

    done = run(["hook", "dump"], env={"CREATE_FILES": "true"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "dump successfully\n"
    path = tmp_path / "out" / "hook_config.json"
    doc = json.loads(path.read_text())
    assert doc == json.loads(config.stdout)
    jsonschema.validate(doc, BATCH_SCHEMA)
    assert stat.S_IMODE(path.stat().st_mode) & 0o022 == 0, "not writable by others"

    # Twice: the same file, nothing else in the directory.
    before = path.read_bytes()
    again = run(["hook", "dump"], env={}, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert path.read_bytes() == before
    assert os.listdir(tmp_path / "out") == ["hook_config.json"]


def test_dump_follows_hook_config_path_and_refuses_a_bad_create_files(tmp_path):
    target = tmp_path / "a" / "b" / "hooks.json"
    bad = run(["hook", "dump"], env={"HOOK_CONFIG_PATH": str(target), "CREATE_FILES": "yes"})
    assert bad.returncode == 1 and not target.exists()
    msg = json.loads(bad.stderr.strip())["msg"]
    assert "CREATE_FILES" in msg and "true or false" in msg, msg
    ok = run(["hook", "dump"], env={"HOOK_CONFIG_PATH": str(target), "CREATE_FILES": "1"})
    assert ok.returncode == 0, ok.stderr
    assert json.loads(target.read_text())["version"] == "v1"
    assert not (tmp_path / "out").exists()
