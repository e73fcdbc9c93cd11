"""The dataset builder's command line end to end: generate, validate, show, card, load_dataset, resume, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
from conftest import TINY_LEVEL, run_cli

from dataset_builder.cli import main
from dataset_builder.episodes import make_env, run_episode
from dataset_builder.plan import PlanError, plan_splits
from dataset_builder.schema import FEATURES
from dataset_builder.shards import noise_seed_for

MINIBOSS = "BabyAI-MiniBossLevel-v0"


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


GENERATE = ["generate", "--level", TINY_LEVEL, MINIBOSS, "--splits", "train=6,validation=2,test=2",
            "--shard-size", "3", "--noise-rate", "0.05"]  # fmt: skip


def _generate(output: Path, *extra: str) -> None:
    assert main([*GENERATE, "--output", str(output), *extra]) == 0


@pytest.fixture(scope="module")
def two_level_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("two_levels") / "thoughts"
    run_cli("dataset_builder", *GENERATE, "--output", str(root), "--num-proc", "2")  # two real processes
    return root


def test_generated_folder_validates_and_loads_with_load_dataset(two_level_folder, tmp_path, monkeypatch):
    assert "OK:" in run_cli("dataset_builder", "validate", str(two_level_folder)).stdout
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    manifest = json.loads((two_level_folder / "generation/manifest.json").read_text())
    for level in (TINY_LEVEL, MINIBOSS):
        loaded = datasets.load_dataset(str(two_level_folder), level)
        assert set(loaded) == {"train", "validation", "test"}
        assert loaded["train"].features == FEATURES
        seeds = {split: loaded[split]["seed"] for split in loaded}
        for split, (start, stop) in manifest["splits"].items():
            assert set(seeds[split]) <= set(range(start, stop))
        assert sum(len(s) for s in seeds.values()) == 10  # the bot solves these levels: nothing lost
    # a row is exactly the episode the generator plays for that seed
    train = datasets.load_dataset(str(two_level_folder), MINIBOSS, split="train")
    assert (
        train.data.table.schema.field("images").type.storage_type.value_type.value_type.value_type.value_type
        == "uint8"
    )
    row = train.with_format("numpy")[4]  # (datasets formats dynamic-shape arrays as int64; values are exact)
    episode = run_episode(make_env(MINIBOSS), MINIBOSS, int(row["seed"]), 0.05, noise_seed_for(0, MINIBOSS))
    assert row["images"].shape == (episode.num_steps, 7, 7, 3)
    assert np.array_equal(row["images"], episode.images)
    assert list(row["thoughts"]) == episode.thoughts and list(row["actions"]) == episode.actions
    assert list(row["noisy"]) == episode.noisy and int(row["num_steps"]) == episode.num_steps


def test_card_reports_statistics_command_and_configs(two_level_folder):
    card = (two_level_folder / "README.md").read_text()
    assert "config_name: BabyAI-MiniBossLevel-v0" in card and "config_name: BabyAI-GoToLocal-v0" in card
    assert "python -m dataset_builder generate --level BabyAI-GoToLocal-v0 BabyAI-MiniBossLevel-v0" in card
    assert "--splits train=0:6,validation=6:8,test=8:10" in card  # the fully explicit, exact command
    statistics = json.loads((two_level_folder / "generation/statistics.json").read_text())
    train = statistics[MINIBOSS]["train"]
    assert train["episodes"] == 6 and train["steps"] > 6 and 0 < train["noisy_fraction"] < 0.5
    assert f"| `{MINIBOSS}` | train | 6 | 6 | {train['steps']} |" in card
    assert "@inproceedings{hu2023thought" in card and "license: apache-2.0" in card


def test_same_command_gives_byte_identical_files_and_num_proc_does_not_matter(two_level_folder, tmp_path):
    again = tmp_path / "thoughts"  # same folder name: the card quotes it
    _generate(again, "--num-proc", "1")
    assert _files(again) == _files(two_level_folder)


def test_interrupted_run_resumes_without_regenerating_finished_shards(two_level_folder, tmp_path, capsys):
    partial = tmp_path / "thoughts"
    _generate(partial, "--num-shards", "2", "--shard-index", "0")  # half the shards, as one of two machines
    assert not (partial / "README.md").exists()  # incomplete: no card
    assert main(["validate", str(partial)]) == 1
    assert "rerun the generate command with --resume" in capsys.readouterr().out
    finished = {p: p.stat().st_mtime_ns for p in (partial / "data").rglob("*.parquet")}
    (partial / "data" / MINIBOSS / ".debris.parquet.tmp-123").write_bytes(b"half a file")
    _generate(partial, "--resume")
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # never regenerated
    assert _files(partial) == _files(two_level_folder)


def test_show_prints_the_thought_trace(two_level_folder, capsys):
    out = run_cli(
        "dataset_builder", "show", str(two_level_folder), "--level", MINIBOSS, "--index", "2"
    ).stdout
    assert out.splitlines()[1].startswith("mission: ")
    assert "steps " in out and "->" in out
    assert main(["show", str(two_level_folder), "--index", "999"]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["show", str(two_level_folder), "--split", "nope"]) == 2
    assert "split 'nope' is not in" in capsys.readouterr().err


def test_card_command_names_the_repo_id_and_changes_nothing_else(generated_folder, tmp_path, capsys):
    folder = Path(shutil.copytree(generated_folder, tmp_path / "dataset"))  # same name: the card quotes it
    original = (folder / "README.md").read_text()
    placeholder = f'episodes = load_dataset("<org>/dataset", "{TINY_LEVEL}", split="train")'
    assert placeholder in original.splitlines()
    statistics = folder / "generation" / "statistics.json"
    statistics_mtime = statistics.stat().st_mtime_ns

    repo_id = "thought-org/babyai-thoughts"
    out = run_cli("dataset_builder", "card", str(folder), "--repo_id", repo_id).stdout
    assert f'load_dataset("{repo_id}", ...)' in out
    card = (folder / "README.md").read_text()
    named = f'episodes = load_dataset("{repo_id}", "{TINY_LEVEL}", split="train")'
    assert named in card.splitlines() and "<org>" not in card
    # byte-identical apart from the snippet line (the manifest's sorted keys must not reorder the card)
    old_lines, new_lines = original.splitlines(keepends=True), card.splitlines(keepends=True)
    assert len(new_lines) == len(old_lines)
    assert [(a, b) for a, b in zip(old_lines, new_lines, strict=True) if a != b] == [
        (placeholder + "\n", named + "\n")
    ]
    # the stored statistics were reused, not recomputed; nothing but README.md changed
    assert statistics.stat().st_mtime_ns == statistics_mtime
    assert {k: v for k, v in _files(folder).items() if k != "README.md"} == {
        k: v for k, v in _files(generated_folder).items() if k != "README.md"
    }
    assert main(["validate", str(folder)]) == 0
    capsys.readouterr()

    for bad in ("babyai-thoughts", "a/b/c", "org/bad--name", ""):
        assert main(["card", str(folder), "--repo_id", bad]) == 2
        assert "Invalid repo id" in capsys.readouterr().err
        assert (folder / "README.md").read_text() == card  # unchanged

    # without --repo_id: the placeholder again, exactly the card generation wrote
    assert main(["card", str(folder)]) == 0
    assert (folder / "README.md").read_bytes() == (generated_folder / "README.md").read_bytes()
    # statistics.json missing: recomputed from the shards (as generation does), same card
    statistics.unlink()
    assert main(["card", str(folder), "--repo-id", repo_id]) == 0
    assert (folder / "README.md").read_text() == card
    assert statistics.read_bytes() == (generated_folder / "generation" / "statistics.json").read_bytes()
    capsys.readouterr()

    (folder / "README.md").unlink()  # an unfinished folder is refused, nothing written
    assert main(["card", str(folder), "--repo_id", repo_id]) == 2
    assert "missing README.md" in capsys.readouterr().err
    assert not (folder / "README.md").exists()
    assert main(["card", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_bot_failures_are_counted_in_card_and_never_dropped(tmp_path):
    root = tmp_path / "keyinbox"
    assert (
        main(
            ["generate", "--level", "BabyAI-KeyInBox-v0", "--splits", "train=2,test=1", "--output", str(root)]
        )
        == 0
    )
    statistics = json.loads((root / "generation/statistics.json").read_text())
    assert statistics["BabyAI-KeyInBox-v0"]["train"]["failures"] == {"bot_error": 2}
    assert "bot_error: 2" in (root / "README.md").read_text()
    shard = json.loads(next((root / "generation/shards").rglob("train-*.json")).read_text())
    assert [f["seed"] for f in shard["failures"]] == [0, 1] and "baby_ai_bot.py" in shard["failures"][0][
        "detail"
    ]
    assert main(["validate", str(root)]) == 0  # seeds fully accounted for


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--level", "BabyAI-Nope-v0", "--episodes", "4"], "unknown level 'BabyAI-Nope-v0'"),
        (["--splits", "train=0:3,test=2:4"], "overlap"),
        (["--seeds", "5:5"], "empty"),
        (["--episodes", "1", "--splits", "train=0.9,test=0.1"], "gets no episodes"),
        (["--episodes", "4", "--noise-rate", "1.5"], "--noise-rate"),
    ],
)
def test_bad_generate_input_fails_clearly_and_writes_nothing(tmp_path, capsys, args, message):
    output = tmp_path / "out"
    assert main(["generate", *args, "--output", str(output)]) == 2  # the CLI's entry point, in process
    assert message in capsys.readouterr().err
    assert not output.exists()


def test_existing_output_needs_resume_or_overwrite(generated_folder, tmp_path, capsys):
    folder = Path(shutil.copytree(generated_folder, tmp_path / "dataset"))
    base = ["generate", "--level", TINY_LEVEL, "--episodes", "12",
            "--splits", "train=0.5,validation=0.25,test=0.25", "--output", str(folder)]  # fmt: skip
    assert main(base) == 2 and "pass --resume" in capsys.readouterr().err
    assert main([*base, "--noise-rate", "0.2", "--resume"]) == 2
    assert "noise_rate" in capsys.readouterr().err
    assert main([*base, "--resume", "--overwrite"]) == 2
    assert "contradict" in capsys.readouterr().err
    assert main([*base, "--overwrite"]) == 0
    assert _files(folder) == _files(generated_folder)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    assert main([*base[:-1], str(foreign), "--overwrite"]) == 2
    assert "not a thought dataset folder" in capsys.readouterr().err
    assert (foreign / "precious.txt").read_text() == "keep me"


def test_validate_rejects_corrupted_and_foreign_folders(generated_folder, tmp_path, capsys):
    folder = Path(shutil.copytree(generated_folder, tmp_path / "dataset"))
    shard = next((folder / "data").rglob("train-*.parquet"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert main(["validate", str(folder)]) == 1
    assert "checksum" in capsys.readouterr().out
    foreign = tmp_path / "foreign"
    (foreign / "data").mkdir(parents=True)
    assert main(["validate", str(foreign)]) == 1
    assert "not a thought dataset folder" in capsys.readouterr().out


def test_split_planning():
    ranges = plan_splits("train=0.8,validation=0.1,test=0.1", episodes=100, seed_start=1000)
    assert [(r.split, r.start, r.stop) for r in ranges] == [
        ("train", 1000, 1080), ("validation", 1080, 1090), ("test", 1090, 1100)
    ]  # fmt: skip
    assert [len(r) for r in plan_splits("train=7,test=3")] == [7, 3]
    assert [(r.start, r.stop) for r in plan_splits("train=0.5,test=0.5", seeds="10:20")] == [
        (10, 15),
        (15, 20),
    ]
    with pytest.raises(PlanError, match="sum to 1"):
        plan_splits("train=0.5,test=0.2", episodes=10)
    with pytest.raises(PlanError, match="overlap"):
        plan_splits("train=0:10,test=5:15")
