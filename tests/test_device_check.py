"""scripts/device_check.sh, the GPU check of issue 11 (docs/TRAINING.md): its config parses, and (slow) the whole
script runs end to end on the CPU in its TINY mode, leaving every file it promises under $OUT."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, trainer_module

from hf_thought_cloning.training.arguments import parse_config_and_overrides


def test_gpu_config_is_the_paper_size_in_bf16():
    config = REPO_ROOT / "train" / "configs" / "gpu_minibosslevel.yaml"
    args, _ = parse_config_and_overrides(trainer_module().TrainArgs, ["--config", str(config)])
    assert (args.image_dim, args.text_dim, args.memory_dim, args.mixed_precision) == (128, 256, 2048, "bf16")
    assert args.epochs == 10 and args.batch_size == 180


@pytest.mark.slow
def test_device_check_runs_end_to_end_in_tiny_mode(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, TINY="1", WHEELS="none", PYTHON=sys.executable, WORK=str(tmp_path), OUT=str(out),
               TRAIN_SECONDS="1", THROUGHPUT_UPDATES="3", OMP_NUM_THREADS="1")  # fmt: skip
    done = subprocess.run([str(REPO_ROOT / "scripts" / "device_check.sh")], env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(path.name for path in out.iterdir()) == [
        "device_check.log", "env.txt", "evaluation.json", "throughput_tf_off.jsonl", "throughput_tf_on.jsonl",
        "trainer_log.jsonl", "training_summary.json",
    ]  # fmt: skip
    for forcing, ratio in (("on", 1.0), ("off", 0.0)):
        log = (out / f"throughput_tf_{forcing}.jsonl").read_text().splitlines()
        throughput = [json.loads(line) for line in log]
        assert throughput[-1]["update"] == 3
        ratios = {row["train/teacher_forcing_ratio"] for row in throughput if "train/teacher_forcing_ratio" in row}
        assert ratios == {ratio}
    trained = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    assert trained[-1]["train/epoch"] == 10 and "validation/success_rate" in trained[-1]
    evaluation = json.loads((out / "evaluation.json").read_text())["suites"]["in-distribution"]
    assert evaluation["episodes"] == 20 and evaluation["seeds"] == list(range(220, 240))
