"""The agent shipped in checkpoints/ loads as a user loads it, acts, and its card states its own evaluations."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED = REPO_ROOT / "checkpoints" / "thought-cloning-minibosslevel-2m-frames"


def test_shipped_agent_loads_in_a_fresh_process_and_thinks_on_a_held_out_seed():
    script = f"""
import gymnasium as gym, minigrid, torch  # noqa: F401
import hf_thought_cloning  # noqa: F401
from transformers import AutoModel, AutoProcessor
folder = {str(SHIPPED)!r}
model = AutoModel.from_pretrained(folder).eval()
processor = AutoProcessor.from_pretrained(folder)
env = gym.make("BabyAI-MiniBossLevel-v0")
observation, _ = env.reset(seed=10_000_000)
with torch.no_grad():
    step = model.act(processor(observation), model.initial_memory(1), sample=False)
print(repr(step.thoughts[0]))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "checksum" not in done.stderr  # saved with its vocabulary checksum: nothing to warn about
    thought = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert thought and "<unk>" not in thought


def test_shipped_card_carries_the_evaluations_that_ship_with_it():
    card = (SHIPPED / "README.md").read_text()
    front_matter = yaml.safe_load(card.split("---")[1])
    metrics = [m for result in front_matter["model-index"][0]["results"] for m in result["metrics"]]
    test = json.loads((SHIPPED / "evaluation" / "eval-test.json").read_text())["suites"]["in-distribution"]
    headline = next(m for m in metrics if m["name"] == "Success rate")
    assert headline["value"] == test["success_rate"] and headline["args"]["episodes"] == test["episodes"] == 500
    assert not list(SHIPPED.rglob("*.pkl")) and not list(SHIPPED.rglob("*.bin"))
