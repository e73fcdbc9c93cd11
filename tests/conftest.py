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
