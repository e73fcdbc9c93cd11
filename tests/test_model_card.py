"""The model card: rendering, Hub metadata, results updates, bad input, and a usage snippet that runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import TINY
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hf_thought_cloning import (
    ThoughtCloningConfig,
    ThoughtCloningModel,
    ThoughtCloningProcessor,
    ThoughtCloningTokenizer,
)
from hf_thought_cloning.model_card import SUMMARY_FILE, render_model_card, update_card_results

LEVEL = "BabyAI-MiniBossLevel-v0"
COMMAND = "accelerate launch train/run.py --config train/configs/quickstart.yaml --seed 7 --epochs 3"


def make_training(**overrides) -> dict:
    training = {
        "variant": "thought-cloning",
        "num_parameters": 133_792,
        "config": {
            "image_dim": 16,
            "text_dim": 32,
            "memory_dim": 48,
            "upper_level": "native",
            "thought_loss_weight": 2.0,
        },
        "dataset": {
            "path_or_id": "tc-org/babyai-thoughts",
            "config": LEVEL,
            "train_episodes": 900,
            "train_frames": 28_800,
            "validation_seeds": {"start": 1_000_000, "stop": 1_000_064},
        },
        "command": COMMAND,
        "seed": 7,
        "hyperparameters": {
            "learning_rate": 0.0005,
            "batch_size": 16,
            "bptt": 20,
            "stop_tf": 2,
            "adam_eps": 1e-05,
        },
        "metrics": {
            "final_loss": 1.2345678,
            "action_accuracy": 0.8125,
            "best_validation_success": 0.41,
            "wall_time_s": 523.4,
        },
        "versions": {"hf-thought-cloning": "0.1.0", "torch": "2.13.0", "transformers": "5.23.0"},
        "hardware": "2-core x86_64 CPU",
        "repo_id": "tc-org/tc-minibosslevel",
    }
    training.update(overrides)
    return training


def result(level: str, metric: str, value: float, **extra) -> dict:
    return {
        "task_type": "reinforcement-learning", "dataset_type": level, "dataset_name": f"{level} held-out seeds",
        "metric_type": metric, "metric_name": metric.replace("_", " "), "metric_value": value, **extra,
    }  # fmt: skip


RESULTS = [
    result(LEVEL, "success_rate", 0.62, dataset_split="test"),
    result(LEVEL, "mean_episode_length", 41.5, dataset_split="test"),
    result("BabyAI-BossLevel-v0", "success_rate", 0.12),
]


def test_render_writes_card_and_summary(tmp_path: Path) -> None:
    training = make_training()
    folder = tmp_path / "model"
    card = render_model_card(folder, training)

    assert sorted(p.name for p in folder.iterdir()) == ["README.md", SUMMARY_FILE]  # no temporaries
    loaded = ModelCard.load(folder / "README.md")
    assert loaded.data.library_name == "transformers"
    assert loaded.data.license == "apache-2.0"
    assert loaded.data.tags == [
        "thought-cloning",
        "babyai",
        "minigrid",
        "imitation-learning",
        "reinforcement-learning",
    ]
    assert loaded.data.datasets == ["tc-org/babyai-thoughts"]
    assert loaded.data.eval_results is None and "model-index" not in loaded.data.to_dict()
    assert loaded.data.to_dict() == card.data.to_dict()  # the YAML round-trips through the Hub's parser

    text = loaded.text
    assert COMMAND in text and "Seed `7`" in text and "2-core x86_64 CPU" in text
    for row in (
        "| `learning_rate` | 0.0005 |",
        "| `batch_size` | 16 |",
        "| `adam_eps` | 1e-05 |",
        "| `stop_tf` | 2 |",
    ):
        assert row in text
    assert "| training episodes | 900 |" in text and "`1000000` to `1000063` (64 seeds)" in text
    assert "| loss | 1.235 |" in text and "| best validation success rate | 0.41 |" in text
    assert "torch 2.13.0" in text and "133,792 parameters" in text
    assert "No evaluation has been run yet" in text
    assert "python -m hf_thought_cloning.evaluate --model <model folder> --suite all" in text
    assert 'AutoModel.from_pretrained("tc-org/tc-minibosslevel"' in text and "step.thoughts" in text
    assert 'thought=["explore unseen area"]' in text
    assert "57 tokens" in text and "arXiv" in text and "2306.00323" in text

    summary = json.loads((folder / SUMMARY_FILE).read_text())
    assert summary == {**training, "dataset": {**training["dataset"], "hub_id": "tc-org/babyai-thoughts"}}
    assert training == make_training()  # the caller's dict is not modified


def test_results_fill_model_index_and_table(tmp_path: Path) -> None:
    render_model_card(tmp_path, make_training(), RESULTS)
    card = ModelCard.load(tmp_path / "README.md")

    assert [(r.dataset_type, r.metric_type, r.metric_value) for r in card.data.eval_results] == [
        (LEVEL, "success_rate", 0.62), (LEVEL, "mean_episode_length", 41.5), ("BabyAI-BossLevel-v0", "success_rate", 0.12),
    ]  # fmt: skip
    assert all(r.task_type == "reinforcement-learning" for r in card.data.eval_results)
    assert card.data.eval_results[0].dataset_split == "test"
    model_index = card.data.to_dict()["model-index"]
    assert model_index[0]["name"] == "tc-minibosslevel"
    assert len(model_index[0]["results"]) == 2  # grouped per (task, dataset)
    assert f"| `{LEVEL}` | {LEVEL} held-out seeds | test | success rate | 0.62 |" in card.text
    assert (
        "| `BabyAI-BossLevel-v0` | BabyAI-BossLevel-v0 held-out seeds |  | success rate | 0.12 |" in card.text
    )
    assert "No evaluation has been run yet" not in card.text
    # the metadata parses back into the same EvalResults
    reparsed = ModelCardData(**card.data.to_dict())
    assert reparsed.eval_results == card.data.eval_results


def test_update_card_results_replaces_results(tmp_path: Path) -> None:
    render_model_card(tmp_path, make_training(), RESULTS)
    edited = ModelCard.load(tmp_path / "README.md")
    edited.data.language = "en"  # metadata added after rendering (by hand or on the Hub) is kept
    edited.save(tmp_path / "README.md")

    update_card_results(tmp_path, [result(LEVEL, "fads", 0.97, dataset_split="test")])
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.eval_results == [
        EvalResult(
            task_type="reinforcement-learning", dataset_type=LEVEL, dataset_name=f"{LEVEL} held-out seeds",
            metric_type="fads", metric_name="fads", metric_value=0.97, dataset_split="test",
        )
    ]  # fmt: skip
    assert card.data.language == "en"
    assert "| fads | 0.97 |" in card.text and "0.62" not in card.text
    assert COMMAND in card.text  # the rest of the card is re-rendered from training_summary.json

    update_card_results(tmp_path, [])
    card = ModelCard.load(tmp_path / "README.md")
    assert "model-index" not in card.data.to_dict() and "No evaluation has been run yet" in card.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", SUMMARY_FILE]


def test_update_card_results_needs_card_and_summary(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="README.md"):
        update_card_results(tmp_path, RESULTS)
    render_model_card(tmp_path, make_training())
    (tmp_path / SUMMARY_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=SUMMARY_FILE):
        update_card_results(tmp_path, RESULTS)


def test_missing_or_contradictory_training_is_a_clear_error(tmp_path: Path) -> None:
    without_seed = make_training()
    del without_seed["seed"]
    bad_dataset = make_training()
    del bad_dataset["dataset"]["config"]
    cases = [
        (without_seed, r"lacks \['seed'\]"),
        (bad_dataset, r"training\['dataset'\] lacks \['config'\]"),
        (make_training(variant="gpt"), "variant"),
        (make_training(variant="behavioral-cloning"), "upper_level"),
        (make_training(variant="no-thought-supervision"), "thought_loss_weight=2.0"),
        (make_training(seed="7"), "must be an int"),
        (make_training(hyperparameters={"lr": object()}), "JSON"),
    ]
    for training, message in cases:
        with pytest.raises(ValueError, match=message):
            render_model_card(tmp_path, training)
    for results, message in (
        ([{k: v for k, v in RESULTS[0].items() if k != "metric_value"}], r"missing \['metric_value'\]"),
        ([{**RESULTS[0], "episodes": 100}], r"unknown \['episodes'\]"),
        ([{**RESULTS[0], "metric_value": "high"}], "finite number"),
    ):
        with pytest.raises(ValueError, match=message):
            render_model_card(tmp_path, make_training(), results)
    assert list(tmp_path.iterdir()) == []  # nothing written for bad input


def test_local_dataset_and_behavioral_cloning(tmp_path: Path) -> None:
    data = tmp_path / "data" / "minibosslevel"
    data.mkdir(parents=True)
    training = make_training(
        variant="behavioral-cloning", config={"upper_level": "none", "memory_dim": 48}, repo_id=None,
        dataset={"path_or_id": str(data), "config": LEVEL},
    )  # fmt: skip
    card = render_model_card(tmp_path / "bc", training)
    assert "datasets" not in card.data.to_dict()
    assert card.data.tags[-1] == "behavioral-cloning"
    assert f"The local dataset folder `{data}`" in card.text
    assert "step.thoughts is None" in card.text and "thought=[" not in card.text
    assert 'from_pretrained("path/to/bc"' in card.text
    assert json.loads((tmp_path / "bc" / SUMMARY_FILE).read_text())["dataset"]["hub_id"] is None


@pytest.mark.parametrize("variant", ["thought-cloning", "behavioral-cloning"])
def test_usage_snippet_runs(tmp_path: Path, variant: str) -> None:
    config = (
        ThoughtCloningConfig(**TINY)
        if variant == "thought-cloning"
        else ThoughtCloningConfig.behavioral_cloning(**TINY)
    )
    model = ThoughtCloningModel(config)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    ThoughtCloningProcessor(ThoughtCloningTokenizer()).save_pretrained(folder)
    training = make_training(
        variant=variant, num_parameters=model.num_parameters(), repo_id=None,
        config={key: value for key, value in config.to_dict().items() if key in ("upper_level", *TINY)},
    )  # fmt: skip
    card = render_model_card(folder, training)

    snippet = re.search(r"```python\n(.*?)```", card.text, re.DOTALL).group(1)
    namespace: dict = {}
    exec(snippet.replace('"path/to/model"', repr(str(folder))), namespace)  # noqa: S102
    step = namespace["step"]
    assert step.actions.shape == (1,)
    if variant == "thought-cloning":
        assert step.thoughts == ["explore unseen area"]  # the steering line's injected thought
    else:
        assert step.thoughts is None
    assert card.data.to_dict() == ModelCard.load(folder / "README.md").data.to_dict()


def test_trainer_style_training_dict(tmp_path: Path) -> None:
    """The trainer's short variant name, explicit validation seeds, None values, a validation history and a
    credential in the arguments."""
    training = make_training(
        variant="text-encoder",
        config={"upper_level": "text_encoder", "thought_loss_weight": 2.0},
        command=f"{COMMAND} --hub_token hf_secret123",
        hyperparameters={
            "learning_rate": 0.0005,
            "lr_halving_epochs": [50],
            "init_from": None,
            "hub_token": "hf_secret123",
        },
        metrics={
            "final_loss": 0.5,
            "thought_loss": None,
            "validations": [{"update": 10, "success": 0.125}, {"update": 20, "success": 0.25}],
        },
    )
    training["dataset"].update(train_episodes=None, validation_seeds=[5, 6, 7, 9])
    card = render_model_card(tmp_path, training)
    text = card.text
    assert card.data.tags[-1] == "text-encoder-upper-level"
    assert "7 seeds" not in text and "4 seeds: `5` to `7`, `9`" in text
    assert "training episodes" not in text  # None: not recorded
    assert "thought loss" not in text and "| loss | 0.5 |" in text
    assert "| update | success |" in text and "| 20 | 0.25 |" in text
    assert "| `lr_halving_epochs` | `[50]` |" in text and "| `init_from` | None |" in text
    on_disk = (tmp_path / "README.md").read_text() + (tmp_path / SUMMARY_FILE).read_text()
    assert "hf_secret123" not in on_disk
    assert "--hub_token <redacted>" in text and "| `hub_token` | (redacted) |" in text
