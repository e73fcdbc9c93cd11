"""Checkpoints hold safetensors and JSON only, restore every generator exactly, and a tampered or old-format
checkpoint is refused with `error:` instead of being unpickled (which would run whatever it holds)."""

from __future__ import annotations

import json
import pickle
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from conftest import TINY_TRAIN_ARGS, train, trainer_module
from safetensors.torch import load_file

from hf_thought_cloning.training.checkpoints import (
    CheckpointProblem,
    TrainerState,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)

PAUSED = ("--epochs", "2", "--validation_every_epochs", "0")


class CreatesAFile:
    """Unpickling this creates the file ``path``: the shape of a crafted checkpoint."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.fixture(scope="module")
def paused_run(generated_folder, tmp_path_factory) -> Path:
    """A run stopped after 2 of 4 updates, with its checkpoint (copy it before changing anything)."""
    output = tmp_path_factory.mktemp("paused") / "run"
    done = train(generated_folder, output, *PAUSED, "--stop_after_updates", "2")
    assert "continue with --resume" in done.stdout
    return output


def test_a_checkpoint_holds_only_safetensors_and_json(paused_run):
    (checkpoint,) = list_checkpoints(paused_run)
    names = sorted(path.name for path in checkpoint.iterdir())
    assert names == ["model.safetensors", "optimizer.json", "optimizer.safetensors", "rng_state_0.json",
                     "rng_state_0.safetensors", "run_signature.json", "trainer_state.json"]  # fmt: skip
    for path in checkpoint.iterdir():
        if path.suffix == ".json":
            json.loads(path.read_text())
        else:
            assert load_file(path)  # safetensors: a JSON header and raw tensor bytes, nothing executable
    assert json.loads((checkpoint / "trainer_state.json").read_text())["update"] == 2


def test_save_then_load_restores_weights_optimiser_and_every_generator(tmp_path):
    accelerator = Accelerator(cpu=True)
    # accelerate makes no loss scaler on CPU; give it the one fp16 on a GPU has, to cover grad_scaler.json.
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=7)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-5)
    for _ in range(3):
        model(torch.randn(5, 4)).square().sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    state = TrainerState(update=3, frames=40, episodes=9, validations=[{"update": 3, "success_rate": 0.5}])
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    folder = save_checkpoint(accelerator, tmp_path, 3, {"seed": 0}, keep_last=2, model=model, optimizer=optimizer,
                             state=state)  # fmt: skip
    draws = (random.random(), np.random.rand(), torch.rand(3))
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    moments = {i: {k: v.clone() for k, v in s.items()} for i, s in optimizer.state_dict()["state"].items()}
    # Take everything elsewhere, then restore it.
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1)
    fresh_optimizer = torch.optim.Adam(model.parameters(), lr=0.5, eps=1e-5)
    restored = TrainerState()
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0)
    load_checkpoint(folder, accelerator, model=model, optimizer=fresh_optimizer, state=restored)
    assert restored == state
    assert (accelerator.scaler.get_scale(), accelerator.scaler.get_growth_interval()) == (1024.0, 7)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    loaded = fresh_optimizer.state_dict()
    assert loaded["param_groups"][0]["lr"] == 1e-3 and loaded["param_groups"][0]["betas"] == (0.9, 0.999)
    assert all(torch.equal(loaded["state"][i][k], v) for i, s in moments.items() for k, v in s.items())
    assert (random.random(), np.random.rand()) == draws[:2] and torch.equal(torch.rand(3), draws[2])


def tamper(checkpoint: Path, how: str, marker: Path) -> str:
    """Damage ``checkpoint`` in place; returns the file the error must name."""
    crafted = pickle.dumps(CreatesAFile(marker))
    if how == "accelerate-format":  # the earlier format: accelerate's pickles beside the weights
        for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin"):
            (checkpoint / name).write_bytes(crafted)
        return "custom_checkpoint_0.pkl"
    if how == "truncated-weights":
        data = (checkpoint / "model.safetensors").read_bytes()
        (checkpoint / "model.safetensors").write_bytes(data[: len(data) // 2])
        return "model.safetensors"
    name = {"optimizer-is-a-pickle": "optimizer.safetensors", "trainer-state-is-a-pickle": "trainer_state.json",
            "rng-state-is-a-pickle": "rng_state_0.safetensors"}[how]  # fmt: skip
    (checkpoint / name).write_bytes(crafted)
    return name


@pytest.mark.parametrize(
    "how", ["accelerate-format", "optimizer-is-a-pickle", "trainer-state-is-a-pickle", "rng-state-is-a-pickle",
            "truncated-weights"]
)  # fmt: skip
def test_a_tampered_checkpoint_is_refused_without_running_it(generated_folder, paused_run, tmp_path, capsys, how):
    output = Path(shutil.copytree(paused_run, tmp_path / "run"))
    (checkpoint,) = list_checkpoints(output)
    marker = tmp_path / "the-pickle-ran"
    named = tamper(checkpoint, how, marker)
    # The crafted payload is live: unpickled (in a throwaway process, as accelerate's loader would), it runs.
    if how != "truncated-weights":
        probe = tmp_path / "probe"
        payload = pickle.dumps(CreatesAFile(probe))
        subprocess.run([sys.executable, "-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"],
                       input=payload, check=True)  # fmt: skip
        assert probe.is_file()
    argv = ["--dataset", str(generated_folder), "--output_dir", str(output), *TINY_TRAIN_ARGS, *PAUSED, "--resume"]
    with pytest.raises(SystemExit) as exit_info:
        trainer_module().main(argv)  # the script's entry point, in process
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "error:" in error and named in error, error
    if how == "accelerate-format":
        assert "pickle" in error and "earlier train/run.py" in error
    assert not marker.exists()
    assert not (output / "model").exists() and list_checkpoints(output) == [checkpoint]


def test_problems_name_the_checkpoint_file(tmp_path):
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters())
    folder = save_checkpoint(accelerator, tmp_path, 1, {}, keep_last=1, model=model, optimizer=optimizer,
                             state=TrainerState())  # fmt: skip
    state = json.loads((folder / "trainer_state.json").read_text())
    (folder / "trainer_state.json").write_text(json.dumps({**state, "update": "3"}))
    with pytest.raises(CheckpointProblem, match="trainer_state.json.*update must be of type int"):
        load_checkpoint(folder, accelerator, model=model, optimizer=optimizer, state=TrainerState())
    (folder / "optimizer.json").unlink()
    with pytest.raises(CheckpointProblem, match=r"incomplete: it lacks \['optimizer.json'\]"):
        load_checkpoint(folder, accelerator, model=model, optimizer=optimizer, state=TrainerState())
