"""Packaging a trained model folder with its evaluations for the Hub (card, model-index, raw evaluations)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import save_tiny
from huggingface_hub import ModelCard
from transformers import AutoModel

from hf_thought_cloning.evaluate import main as evaluate_main
from hf_thought_cloning.model_card import render_model_card
from hf_thought_cloning.packaging import main as package_main
from hf_thought_cloning.packaging import merge_results

REPO_ID = "my-org/thought-cloning-babyai"
DATASET_ID = "my-org/babyai-thoughts-minibosslevel"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> dict[str, Path]:
    """A tiny model folder with a card, and three real evaluations of it (two overlap in what they measure)."""
    root = tmp_path_factory.mktemp("packaging")
    model = save_tiny(root / "run" / "model")
    training = {
        "variant": "thought-cloning", "num_parameters": 133_792, "config": {"upper_level": "native"},
        "dataset": {"path_or_id": "outputs/data", "config": "BabyAI-MiniBossLevel-v0"},
        "command": "python train/run.py --config train/configs/study_cpu.yaml", "seed": 0,
        "hyperparameters": {"epochs": 6}, "metrics": {"frames": 1000}, "versions": {}, "hardware": "2-core CPU",
    }  # fmt: skip
    render_model_card(model, training)
    common = ["--model", str(model), "--num-envs", "4", "--max-steps", "6", "--no-replay"]
    runs = {
        "eval-id": ["--suite", "in-distribution", "--episodes", "3"],
        "eval-id-small": ["--suite", "in-distribution", "--episodes", "1"],
        "eval-ood": ["--suite", "ood", "--episodes", "1"],
    }
    folders = {"model": model}
    for name, arguments in runs.items():
        folders[name] = root / "run" / name
        assert evaluate_main([*common, *arguments, "--output", str(folders[name])]) == 0
    return folders


def test_package_renders_card_for_the_repo_with_merged_results(evaluated, tmp_path, capsys):
    output = tmp_path / "thought-cloning-babyai"
    card_before = (evaluated["model"] / "README.md").read_text()
    code = package_main([
        "--model", str(evaluated["model"]), "--output", str(output), "--repo_id", REPO_ID,
        "--dataset_hub_id", DATASET_ID,
        "--evaluation", str(evaluated["eval-id"]), str(evaluated["eval-id-small"] / "evaluation.json"),
        str(evaluated["eval-ood"]),
    ])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    # in-distribution success and mean length are measured twice: the second (1-episode) copies are not taken
    assert "2 duplicate metric(s) not taken" in printed

    card = ModelCard.load(output / "README.md")
    assert card.data.datasets == [DATASET_ID]
    assert card.data.eval_results and card.data.model_name == "thought-cloning-babyai"
    names = [result.metric_name for result in card.data.eval_results]
    assert len(names) == len(set(names))  # each metric once
    assert "Success rate" in names and any(name.startswith("Success rate (behavioural") for name in names)
    held_out = next(r for r in card.data.eval_results if r.metric_name == "Success rate")
    first = json.loads((evaluated["eval-id"] / "evaluation.json").read_text())
    assert held_out.metric_value == first["suites"]["in-distribution"]["success_rate"]
    assert f'"{REPO_ID}"' in card.text or REPO_ID in card.text  # the usage snippet loads the repo

    assert sorted(p.name for p in (output / "evaluation").iterdir()) == [
        "eval-id-small.json", "eval-id.json", "eval-ood.json",
    ]  # fmt: skip
    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["repo_id"] == REPO_ID and summary["dataset"]["hub_id"] == DATASET_ID
    assert (evaluated["model"] / "README.md").read_text() == card_before  # the source folder is not touched
    model = AutoModel.from_pretrained(output)
    assert sum(p.numel() for p in model.parameters()) == 133_792
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_merge_keeps_the_first_evaluation_of_each_metric(evaluated):
    first = json.loads((evaluated["eval-id"] / "evaluation.json").read_text())
    second = json.loads((evaluated["eval-id-small"] / "evaluation.json").read_text())
    second["suites"]["in-distribution"]["success_rate"] = 0.987  # a value the first cannot have (3 episodes)
    results, duplicates = merge_results([first, second])
    assert duplicates == 2 and len(results) == 2
    assert results[0]["metric_value"] == first["suites"]["in-distribution"]["success_rate"] != 0.987
    results, _ = merge_results([second, first])
    assert results[0]["metric_value"] == 0.987


def test_bad_input_exits_2_and_writes_nothing(evaluated, tmp_path, capsys):
    other = save_tiny(tmp_path / "other-model")
    (other / "training_summary.json").write_text((evaluated["model"] / "training_summary.json").read_text())
    output = tmp_path / "package"
    cases = [
        (["--model", str(other), "--evaluation", str(evaluated["eval-id"])], "evaluates"),
        (["--model", str(evaluated["model"]), "--repo_id", "no-org-name"], "Invalid repo id"),
        (["--model", str(evaluated["model"]), "--evaluation", str(tmp_path)], "no evaluation at"),
        (["--model", str(tmp_path)], "not a trained model folder"),
    ]
    for arguments, message in cases:
        argv = ["--output", str(output), "--repo_id", REPO_ID, *arguments]
        assert package_main(argv) == 2, arguments
        assert message in capsys.readouterr().err
        assert not output.exists()
    output.mkdir()
    assert package_main(["--model", str(evaluated["model"]), "--output", str(output), "--repo_id", REPO_ID]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    shutil.rmtree(output)
