"""Shared fixtures: real dataset folders made by the real CLI, as users make them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_LEVEL = "BabyAI-GoToLocal-v0"
# The smallest model configuration the tests use (about 0.13M parameters for TC).
TINY = {"image_dim": 16, "text_dim": 32, "memory_dim": 48, "actor_hidden_dim": 16, "num_attention_heads": 2}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="also run the tests marked slow (longer end-to-end runs)")
    parser.addoption("--browser", action="store_true", help="also run the tests marked browser (headless chromium)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for marker, reason in (
        ("slow", "slow: run with --slow (scripts/test.sh --slow)"),
        ("browser", "browser: run with --browser (needs chromium and playwright, see docs/DEMO.md)"),
    ):
        if config.getoption(f"--{marker}"):
            continue
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if item.get_closest_marker(marker) is not None:
                item.add_marker(skip)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for servers the tests start)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_cli(*args: str, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m <args>`` from the repository root, offline, output captured."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )
    if check:
        assert done.returncode == 0, (
            f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return done


@pytest.fixture(scope="session")
def generated_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real dataset folder (one level, three splits), made by the generator CLI."""
    root = tmp_path_factory.mktemp("generated") / "dataset"
    run_cli(
        "dataset_builder", "generate", "--level", TINY_LEVEL, "--episodes", "12",
        "--splits", "train=0.5,validation=0.25,test=0.25", "--num-proc", "1", "--output", str(root),
    )  # fmt: skip
    return root


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models are dominated by per-op overhead: one thread is faster, and immune to a busy second core."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def save_tiny(folder: Path, config=None) -> Path:
    """A saved model folder (weights, config, processor) of a freshly initialised tiny model, seed 0."""
    from hf_thought_cloning import (
        ThoughtCloningConfig,
        ThoughtCloningModel,
        ThoughtCloningProcessor,
        ThoughtCloningTokenizer,
    )

    torch.manual_seed(0)
    ThoughtCloningModel(config or ThoughtCloningConfig(**TINY)).save_pretrained(folder)
    ThoughtCloningProcessor(ThoughtCloningTokenizer()).save_pretrained(folder)
    return folder


def break_model_folder(folder: Path, how: str) -> Path:
    """Damage a saved model folder in place, the ways users do (``how`` names the damage)."""
    import json

    from safetensors.torch import load_file, save_file

    config_path, weights_path = folder / "config.json", folder / "model.safetensors"
    config = json.loads(config_path.read_text())
    if how == "swapped-colours":  # same size, so only the vocabulary checksum can tell
        vocabulary = config["vocabulary"]
        red, green = vocabulary.index("red"), vocabulary.index("green")
        vocabulary[red], vocabulary[green] = vocabulary[green], vocabulary[red]
    elif how == "swapped-tokenizer-colours":  # tokenizer.json edited, config.json and weights intact
        tokenizer = json.loads((folder / "tokenizer.json").read_text())
        vocab = tokenizer["model"]["vocab"]
        vocab["red"], vocab["green"] = vocab["green"], vocab["red"]
        (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    elif how == "shorter-vocabulary":
        config["vocabulary"] = config["vocabulary"][:-1]
    elif how == "other-dimensions":
        config["text_dim"] *= 2
    elif how == "truncated-weights":
        data = weights_path.read_bytes()
        weights_path.write_bytes(data[: len(data) // 2])
    elif how == "garbage-weights":
        weights_path.write_bytes(b"this is not a safetensors file\n" * 8)
    elif how in ("missing-weights", "unexpected-weights", "no-checksum"):
        weights = load_file(weights_path)
        if how == "missing-weights":
            weights = {name: value for name, value in weights.items() if "actor" not in name}
        elif how == "unexpected-weights":
            weights["extra.weight"] = torch.zeros(2)
        else:  # a folder saved before vocabulary checksums existed
            del weights["vocabulary_checksum"]
        save_file(weights, weights_path, metadata={"format": "pt"})
    else:
        raise ValueError(f"unknown damage {how!r}")
    config_path.write_text(json.dumps(config, indent=2))
    return folder


# ------------------------------------------------------------------------------ train/run.py as a subprocess
# The tiny model and schedule of the trainer tests (TINY's sizes as command-line flags).
TINY_TRAIN_ARGS = (
    "--image_dim", "16", "--text_dim", "32", "--memory_dim", "48", "--actor_hidden_dim", "16",
    "--num_attention_heads", "2", "--batch_size", "3", "--bptt", "8", "--learning_rate", "0.003",
    "--warmup_epochs", "0", "--lr_halving_epochs", "1", "--stop_teacher_forcing_epoch", "1",
    "--validation_episodes", "2", "--validation_num_envs", "2", "--report_to", "none", "--logging_steps", "1",
    "--cpu",
)  # fmt: skip


def train(dataset: Path, output: Path, *args: str, check: bool = True, env: dict | None = None,
          launcher: tuple[str, ...] = (), tiny: bool = True) -> subprocess.CompletedProcess:  # fmt: skip
    """``train/run.py`` on ``dataset`` into ``output``, offline, one thread; later flags override earlier ones."""
    command = [*(launcher or (sys.executable,)), "train/run.py", "--dataset", str(dataset), "--output_dir", str(output),
               *(TINY_TRAIN_ARGS if tiny else ()), *args]  # fmt: skip
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=environment)
    if check:
        assert done.returncode == 0, f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


def trainer_log(output: Path) -> list[dict]:
    """The run's trainer_log.jsonl entries."""
    import json

    return [json.loads(line) for line in (output / "trainer_log.jsonl").read_text().splitlines()]


def trainer_module():
    """train/run.py as a module (it is a script, not part of the installed package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_run", REPO_ROOT / "train" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_run"] = module  # HfArgumentParser resolves the dataclass's annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo_url():
    """The demo app (shipped agent) served on 127.0.0.1 for the module's tests: its URL."""
    from demo.app import build_app

    app = build_app()
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


def steer_first_row(model, inputs, memory):
    """Act on ``inputs`` twice, generated and with "go to red ball" injected in row 0; check the injected words
    reached the lower level and changed row 0's action. Returns (generated, steered, what the lower level read)."""
    seen = []
    hook = model.action_generator.thought_pool.register_forward_hook(lambda module, args, out: seen.append(args[1]))
    generated = model.act(inputs, memory, sample=False)
    steered = model.act(inputs, memory, thought=["go to red ball", None], sample=False)
    hook.remove()
    assert steered.thoughts == ["go to red ball", generated.thoughts[1]]
    injected, _ = model.text_reader.encode(model.text_to_ids(["go to red ball"]), "thought")
    torch.testing.assert_close(seen[1][0, : injected.shape[1]], injected[0])
    assert not torch.allclose(steered.action_logits[0], generated.action_logits[0])  # it acted on the injection
    return generated, steered, seen
