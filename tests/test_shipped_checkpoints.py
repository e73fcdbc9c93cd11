"""The agents shipped in checkpoints/ load as a user loads them, act, and their cards state their own evaluations."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
# Every trained agent folder in checkpoints/ (a backbone built by vlm_backbones is not shipped there).
SHIPPED_AGENTS = sorted(path.parent for path in (REPO_ROOT / "checkpoints").glob("*/training_summary.json"))
shipped = pytest.mark.parametrize("folder", SHIPPED_AGENTS, ids=[path.name for path in SHIPPED_AGENTS])


def test_the_shipped_agents_are_found():
    assert SHIPPED_AGENTS, "no agent folder with training_summary.json in checkpoints/"


@shipped
def test_shipped_agent_loads_in_a_fresh_process_and_thinks_on_a_held_out_seed(folder):
    script = f"""
import gymnasium as gym, minigrid, torch  # noqa: F401
import hf_thought_cloning  # noqa: F401
from transformers import AutoModel, AutoProcessor
folder = {str(folder)!r}
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


@shipped
def test_shipped_card_carries_the_evaluations_that_ship_with_it(folder):
    card = (folder / "README.md").read_text()
    front_matter = yaml.safe_load(card.split("---")[1])
    metrics = [m for result in front_matter["model-index"][0]["results"] for m in result["metrics"]]
    # The card's headline comes from the most trusted evaluation with the in-distribution suite (packaging.json).
    names = json.loads((folder / "packaging.json").read_text())["evaluations"]
    suites = [json.loads((folder / "evaluation" / f"{name}.json").read_text())["suites"] for name in names]
    test = next(suite["in-distribution"] for suite in suites if "in-distribution" in suite)
    headline = next(m for m in metrics if m["name"] == "Success rate")
    assert headline["value"] == test["success_rate"] and headline["args"]["episodes"] == test["episodes"] == 500
    assert not list(folder.rglob("*.pkl")) and not list(folder.rglob("*.bin"))
