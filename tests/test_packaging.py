"""Packaging a trained model folder with its evaluations for the Hub (card, model-index, raw evaluations)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, save_tiny
from fake_hub import FakeHub
from huggingface_hub import ModelCard
from transformers import AutoModel

from hf_thought_cloning.evaluate import main as evaluate_main
from hf_thought_cloning.model_card import render_model_card
from hf_thought_cloning.packaging import main as package_main
from hf_thought_cloning.packaging import merge_results

REPO_ID = "my-org/thought-cloning-babyai"
DATASET_ID = "my-org/babyai-thoughts-minibosslevel"
TOKEN = "hf_test_packaging_token"


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
    # Quick looks (--max-steps 6), so packaging them needs --allow_capped.
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
        "--dataset_hub_id", DATASET_ID, "--allow_capped",
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
    # A quick look says so: episode count and step cap are in the model-index and in the Results table.
    assert held_out.metric_args == {"episodes": 3, "max_steps": 6}
    assert all(result.metric_args["max_steps"] == 6 for result in card.data.eval_results)
    assert "| Success rate | 0 | 3 | 6 (quick look) |" in card.text
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
    assert json.loads((output / "packaging.json").read_text())["evaluations"] == ["eval-id", "eval-id-small", "eval-ood"]


def test_merge_keeps_the_first_evaluation_of_each_metric(evaluated):
    first = json.loads((evaluated["eval-id"] / "evaluation.json").read_text())
    second = json.loads((evaluated["eval-id-small"] / "evaluation.json").read_text())
    second["suites"]["in-distribution"]["success_rate"] = 0.987  # a value the first cannot have (3 episodes)
    results, duplicates = merge_results([first, second])
    assert duplicates == 2 and len(results) == 2
    assert results[0]["metric_value"] == first["suites"]["in-distribution"]["success_rate"] != 0.987
    results, _ = merge_results([second, first])
    assert results[0]["metric_value"] == 0.987


@pytest.mark.parametrize(
    "case, message",
    [
        ("another-model", "evaluates"),
        ("bad-repo-id", "Invalid repo id"),
        ("no-evaluation", "no evaluation at"),
        ("not-a-model", "not a trained model folder"),
        ("evaluation-is-a-list", "is not a `python -m hf_thought_cloning.evaluate` output"),
        ("evaluation-not-json", "is not valid JSON"),
        ("capped-evaluation", "quick looks, not results: eval-id (--max-steps 6)"),
        ("output-exists", "pass --overwrite"),
        ("output-is-a-file", "is a file"),
        ("output-inside-the-model", "must lie outside --model"),
        ("output-holds-the-model", "holds the model folder"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(evaluated, tmp_path, capsys, case, message):
    output = tmp_path / "package"
    model = str(evaluated["model"])
    arguments = {"another-model": ["--model", str(tmp_path / "other-model"), "--evaluation", str(evaluated["eval-id"])],
                 "bad-repo-id": ["--model", model, "--repo_id", "no-org-name"],
                 "no-evaluation": ["--model", model, "--evaluation", str(tmp_path)],
                 "not-a-model": ["--model", str(tmp_path)],
                 "evaluation-is-a-list": ["--model", model, "--evaluation", str(tmp_path / "list.json")],
                 "evaluation-not-json": ["--model", model, "--evaluation", str(tmp_path / "list.json")],
                 "capped-evaluation": ["--model", model, "--evaluation", str(evaluated["eval-id"])],
                 "output-exists": ["--model", model],
                 "output-is-a-file": ["--model", model],
                 "output-inside-the-model": ["--model", model],
                 "output-holds-the-model": ["--model", model]}[case]  # fmt: skip
    output = {"output-inside-the-model": evaluated["model"] / "package",
              "output-holds-the-model": evaluated["model"].parent}.get(case, output)  # fmt: skip
    if case == "another-model":
        other = save_tiny(tmp_path / "other-model")
        (other / "training_summary.json").write_text((evaluated["model"] / "training_summary.json").read_text())
    (tmp_path / "list.json").write_text("[1, 2]\n" if case == "evaluation-is-a-list" else "{not json\n")
    if case == "output-exists":
        output.mkdir()
    if case == "output-is-a-file":
        output.write_text("a file\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    capsys.readouterr()
    assert package_main(["--output", str(output), "--repo_id", REPO_ID, *arguments]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, nothing removed


def _run_folder(root: Path) -> Path:
    """A training run's folder as train/run.py leaves it: checkpoints and the log, no package."""
    (root / "checkpoints" / "checkpoint-20").mkdir(parents=True)
    (root / "checkpoints" / "checkpoint-20" / "trainer_state.json").write_text('{"step": 20}\n')
    (root / "trainer_log.jsonl").write_text('{"step": 10, "loss": 2.5}\n')
    return root


def _notes_folder(root: Path) -> Path:
    root.mkdir()
    (root / "notes.md").write_text("hours of notes\n")
    return root


@pytest.mark.parametrize("make_folder", [_run_folder, _notes_folder])
def test_overwrite_refuses_a_folder_that_is_not_a_package(evaluated, tmp_path, capsys, make_folder):
    folder = make_folder(tmp_path / "precious")
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    argv = ["--model", str(evaluated["model"]), "--output", str(folder), "--repo_id", REPO_ID, "--overwrite"]
    assert package_main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: --overwrite refused") and "not a packaged model folder" in error
    assert {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]  # no staging debris either


def test_overwrite_replaces_a_previous_package_whole(evaluated, tmp_path):
    output = tmp_path / "package"
    base = ["--model", str(evaluated["model"]), "--output", str(output), "--repo_id", REPO_ID]
    assert package_main([*base, "--allow_capped", "--evaluation", str(evaluated["eval-ood"])]) == 0
    assert (output / "evaluation" / "eval-ood.json").is_file()
    assert package_main([*base, "--overwrite"]) == 0
    assert not (output / "evaluation").exists()  # nothing of the previous package is left beside the new one
    assert json.loads((output / "packaging.json").read_text())["evaluations"] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["package"]


def test_push_uploads_the_package_to_the_hub_at_hf_endpoint_and_it_reloads(evaluated, tmp_path):
    """The real CLI in a subprocess, as a user runs it: the endpoint is huggingface_hub's HF_ENDPOINT."""
    output = tmp_path / "package"
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    with FakeHub() as hub:
        env.update(HF_ENDPOINT=hub.endpoint, HF_TOKEN=TOKEN, HF_HOME=str(tmp_path / "hf-home"))
        done = subprocess.run(
            [sys.executable, "-m", "hf_thought_cloning.packaging", "--model", str(evaluated["model"]),
             "--output", str(output), "--repo_id", REPO_ID, "--evaluation", str(evaluated["eval-id"]),
             "--allow_capped", "--push", "--private"],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"pushed {output} to {hub.endpoint}/{REPO_ID}" in done.stdout
        # huggingface_hub's own best-effort fetch of its agent registry (ignored by it when answered 404).
        assert [r.path for r in hub.unhandled if r.path != "/api/agent-harnesses"] == []
        repo = hub.repo(REPO_ID, repo_type="model")
        assert repo.private
        writes = [r for r in hub.requests if r.path == "/api/repos/create" or "/commit/" in r.path]
        assert len(writes) == 2 and all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in writes)
        pushed = repo.files()
    local = {p.relative_to(output).as_posix(): p.read_bytes() for p in output.rglob("*") if p.is_file()}
    assert pushed == local  # exactly the packaged folder, byte for byte
    reloaded = tmp_path / "reloaded"
    for name, content in pushed.items():
        (reloaded / name).parent.mkdir(parents=True, exist_ok=True)
        (reloaded / name).write_bytes(content)
    model, original = AutoModel.from_pretrained(reloaded), AutoModel.from_pretrained(evaluated["model"])
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), original.state_dict().values(), strict=True))
    assert ModelCard.load(reloaded / "README.md").data.model_name == "thought-cloning-babyai"


def test_push_without_a_reachable_hub_is_an_error_line(evaluated, tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    # Nothing listens on the discard port.
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_TOKEN=TOKEN, HF_HOME=str(tmp_path / "hf-home"))
    done = subprocess.run(
        [sys.executable, "-m", "hf_thought_cloning.packaging", "--model", str(evaluated["model"]),
         "--output", str(tmp_path / "package"), "--repo_id", REPO_ID, "--push"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "error: " in done.stderr and "pushing it to my-org/thought-cloning-babyai failed" in done.stderr
    assert (tmp_path / "package" / "packaging.json").is_file()  # the package itself is kept
