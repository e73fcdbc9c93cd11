"""``python -m demo.push``: the Space folder, pushed to tests/fake_hub.py through HF_ENDPOINT as a user pushes
it, then run from what the Hub received the way a Space runs it (``python app.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import gradio
import pytest
import yaml
from conftest import REPO_ROOT, free_port
from fake_hub import FakeHub
from gradio_client import Client

from demo.app import SHIPPED_MODEL
from demo.push import main as push_main

SPACE_ID = "thought-org/thought-cloning-demo"
MODEL_ID = "thought-org/thought-cloning-babyai"
TOKEN = "hf_test_space_token"


def front_matter(readme: str) -> dict:
    assert readme.startswith("---\n")
    return yaml.safe_load(readme.split("---\n")[1])


def test_the_space_folder_pushes_to_the_hub_and_runs_from_what_was_pushed(tmp_path):
    output = tmp_path / "space"
    with FakeHub() as hub:
        env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": TOKEN,
               "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(tmp_path / "hf-home")}  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "demo.push", "--repo_id", SPACE_ID, "--model_id", MODEL_ID,
             "--output", str(output), "--push"],
            cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"pushed {output} to {hub.endpoint}/spaces/{SPACE_ID}" in done.stdout
        assert [r.path for r in hub.unhandled if r.path != "/api/agent-harnesses"] == []
        create = next(r for r in hub.requests if r.path == "/api/repos/create")
        assert create.json["type"] == "space" and create.json["sdk"] == "gradio"
        pushed = hub.repo(SPACE_ID, repo_type="space").files()
    local = {p.relative_to(output).as_posix(): p.read_bytes() for p in output.rglob("*") if p.is_file()}
    assert pushed == local  # exactly the folder, byte for byte
    card = front_matter(pushed["README.md"].decode())
    assert card["sdk"] == "gradio" and card["sdk_version"] == gradio.__version__
    assert card["app_file"] == "app.py" and card["models"] == [MODEL_ID]
    requirements = pushed["requirements.txt"].decode().splitlines()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in requirements
    assert any(line.startswith("torch") for line in requirements) and not any(
        "pytest" in r for r in requirements
    )
    assert {"app.py", "space.json", "hf_thought_cloning/rollouts.py", "dataset_builder/thoughts.py",
            "demo/app.py", "model_cards/thought_cloning.md"} <= set(pushed)  # fmt: skip
    assert not [path for path in pushed if "__pycache__" in path or path.endswith(".pyc")]

    # Run the pushed copy as a Space does: its own folder first on the path, Gradio's address from the
    # environment; the model from a Space variable (the fake Hub serves no model files).
    space = tmp_path / "download"
    for path, data in pushed.items():
        (space / path).parent.mkdir(parents=True, exist_ok=True)
        (space / path).write_bytes(data)
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "THOUGHT_CLONING_DEMO_MODEL": str(SHIPPED_MODEL), "PYTHONPATH": ""}  # fmt: skip
    process = subprocess.Popen([sys.executable, "app.py"], cwd=space, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        client = connect(f"http://127.0.0.1:{port}/", process)
        client.predict(
            str(SHIPPED_MODEL), "BabyAI-MiniBossLevel-v0", "0", False, [], "", api_name="/new_episode"
        )
        thought = client.predict(api_name="/step")[1]
        assert thought and thought.split()[0] in {
            "explore",
            "open",
            "unlock",
            "pickup",
            "drop",
            "remove",
            "go",
        }
    finally:
        process.terminate()
        process.wait(timeout=30)


def connect(url: str, process: subprocess.Popen, timeout: float = 120.0) -> Client:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            pytest.fail(f"the Space's app.py exited with {process.returncode}:\n{process.stdout.read()}")
        try:
            return Client(url, verbose=False)
        except Exception:  # not serving yet (connection refused); anything else shows at the deadline
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--repo_id", "no-slash", "--model_id", MODEL_ID), "--repo_id: Invalid repo id 'no-slash'"),
        (("--repo_id", SPACE_ID, "--model_id", "checkpoints/thought-cloning-minibosslevel-2m-frames/x"),
         "--model_id: Invalid repo id"),
    ],
)  # fmt: skip
def test_bad_ids_are_error_lines_and_nothing_is_written(tmp_path, capsys, args, expected):
    assert push_main([*args, "--output", str(tmp_path / "space")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and expected in error, error
    assert not (tmp_path / "space").exists()


def test_only_a_space_folder_of_this_command_is_replaced_and_only_with_overwrite(tmp_path, capsys):
    def push(output, *flags):
        return push_main(
            ["--repo_id", SPACE_ID, "--model_id", MODEL_ID, "--output", str(tmp_path / output), *flags]
        )

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert (
        push("mine", "--overwrite") == 2 and "not a Space folder of this command" in capsys.readouterr().err
    )
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    assert push("space") == 0
    (tmp_path / "space" / "stale.txt").write_text("from an earlier version")
    assert push("space") == 2 and "pass --overwrite" in capsys.readouterr().err
    assert push("space", "--overwrite") == 0 and not (tmp_path / "space" / "stale.txt").exists()
