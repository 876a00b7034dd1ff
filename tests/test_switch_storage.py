"""The storage check as a step of the mode switch (issue 16), through the converge with
the real hooks and a real Garage: a bucket whose key is refused never reaches the
masters (the switch stays, the failure kind names the cause), the right key passes and
the chart renders the bucket for every master (Detached on S3 in HA)."""
import base64

import yaml

from conftest import module_config, nodes_file
from registry_env import rendered_secret, switch_state
from test_s3_storage import BUCKET, garage  # noqa: F401 - the fixture
from tools.garage import REGION, bucket_objects, s3_settings

MASTERS = [("m1", "127.0.0.11"), ("m2", "127.0.0.12")]


def storage_of(state, node):
    """distribution's storage section rendered for master `node`."""
    doc = rendered_secret(state, node)
    assert doc is not None, f"nothing rendered for {node}"
    return yaml.safe_load(base64.b64decode(doc["data"]["config.distribution.yaml"]).decode())["storage"]


def test_a_refused_key_stops_the_switch_and_the_right_one_renders_every_master(tmp_path, converge, garage):  # noqa: F811
    nodes = nodes_file(tmp_path, MASTERS)
    key, secret = garage.key
    wrong = "0" * len(secret)
    objects = bucket_objects(garage, BUCKET)

    def settings(secret_key):
        s3 = {**s3_settings(garage, BUCKET), "secretKey": secret_key}
        return {"mode": "Detached", "highAvailability": True, "detached": {"storageMode": "S3", "s3": s3}}

    converge(module_config(tmp_path, settings(wrong)), nodes)
    assert wrong not in converge.output and secret not in converge.output
    state, conds = switch_state(converge.state)
    assert state["check"]["what"] == "storage" and state["check"]["kind"] == "bad-credentials", state["check"]
    assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == ("False", "StorageCheckFailed")
    assert conds["ChecksPassed"]["reason"] == "CheckBadCredentials"
    assert state.get("registry") is None, "a refused bucket never reaches the masters"
    assert all(rendered_secret(converge.state, n) is None for n, _ in MASTERS)
    assert "s3.secretKey" in state["check"]["message"] and wrong not in state["check"]["message"]

    converge(module_config(tmp_path, settings(secret)), nodes)
    assert secret not in converge.output
    state, conds = switch_state(converge.state)
    assert (state["check"]["what"], state["check"]["ok"]) == ("storage", True), state["check"]
    assert state["registry"]["nodes"] == ["m1", "m2"], "Detached on S3 runs on every master"
    assert conds["ChecksPassed"]["reason"] == "Pending", "the mirror check follows once the masters serve"
    for n, _ in MASTERS:
        s3 = storage_of(converge.state, n)["s3"]
        assert (s3["bucket"], s3["region"], s3["rootdirectory"], s3["accesskey"], s3["secretkey"]) == (
            BUCKET, REGION, "/embedded-registry", key, secret), n
    # The check's probe objects are gone; a second run changes nothing.
    assert bucket_objects(garage, BUCKET) == objects
    before = switch_state(converge.state)[0]
    converge(module_config(tmp_path, settings(secret)), nodes)
    assert switch_state(converge.state)[0] == before
