"""train/run.py --push_to_hub / --push_checkpoints against tests/fake_hub.py (a real local HTTP server), reached
the way huggingface_hub reaches the Hub: through HF_ENDPOINT and HF_TOKEN in the trainer's environment."""

from __future__ import annotations

import pytest
import torch
from conftest import train
from fake_hub import FakeHub
from transformers import AutoModel

import hf_thought_cloning  # noqa: F401  (registers the Auto classes)
from hf_thought_cloning.training.checkpoints import PICKLE_SUFFIXES, list_checkpoints

REPO_ID = "thought-org/tc-agent"
TOKEN = "hf_test_training_token"
PUSHES = ("--epochs", "2", "--validation_every_epochs", "0", "--push_to_hub", "--push_checkpoints",
          "--hub_model_id", REPO_ID)  # fmt: skip


@pytest.fixture
def hub():
    with FakeHub() as fake:
        yield fake
    assert fake.unhandled == [], f"the trainer called endpoints the fake does not know: {fake.unhandled}"


def online(hub: FakeHub) -> dict[str, str]:
    # Without HF_HUB_DISABLE_TELEMETRY, huggingface_hub's user-agent code also fetches /api/agent-harnesses.
    return {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_TELEMETRY": "1"}


def test_pushed_model_and_checkpoints_match_the_run_and_reload(generated_folder, tmp_path, hub):
    output = tmp_path / "run"
    done = train(generated_folder, output, *PUSHES, env=online(hub))
    assert f"pushed to {hub.endpoint}/{REPO_ID}" in done.stdout
    # The repo is created (the Hub checked) before training, then one commit per checkpoint and the model.
    assert hub.paths_called()[0] == "POST /api/repos/create"
    repo = hub.repo(REPO_ID, "model")
    assert [c["header"]["summary"] for c in repo.commits] == [
        "Checkpoint at update 2", "Checkpoint at update 4", "Upload Thought Cloning model"]  # fmt: skip
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in hub.requests)

    pushed = repo.files()
    model_files = {p.name: p.read_bytes() for p in (output / "model").iterdir()}
    assert {path: data for path, data in pushed.items() if not path.startswith("checkpoints/")} == model_files
    for checkpoint in list_checkpoints(output):
        for path in checkpoint.iterdir():
            assert pushed[f"checkpoints/{checkpoint.name}/{path.name}"] == path.read_bytes()
    assert not [path for path in pushed if path.endswith(PICKLE_SUFFIXES)]

    # What the Hub holds reloads as the trained agent.
    download = tmp_path / "download"
    for path, data in pushed.items():
        if not path.startswith("checkpoints/"):
            (download / path).parent.mkdir(parents=True, exist_ok=True)
            (download / path).write_bytes(data)
    reloaded = AutoModel.from_pretrained(download, trust_remote_code=False)
    local = AutoModel.from_pretrained(output / "model", trust_remote_code=False)
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), local.state_dict().values(), strict=True))


def test_a_refused_checkpoint_push_stops_the_run_resumably(generated_folder, tmp_path, hub):
    hub.fail("POST", rf"/api/models/{REPO_ID}/commit/main", 403, "You have read access only", times=5)
    output = tmp_path / "run"
    done = train(generated_folder, output, *PUSHES, env=online(hub), check=False)
    assert done.returncode == 5, (done.stdout, done.stderr)
    assert "error:" in done.stderr and "continue with --resume" in done.stderr and "Traceback" not in done.stderr
    assert [p.name for p in list_checkpoints(output)] == ["checkpoint-00000002"] and not (output / "model").exists()
