"""The dataset builder's command line end to end: generate, validate, show, card, load_dataset, resume, errors."""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from conftest import REPO_ROOT, TINY, TINY_LEVEL, run_cli

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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--index", "999"], "out of range"),
        (["--index", "-1"], "--index must be 0 or more"),
        (["--split", "nope"], "split 'nope' is not in"),
        (["--level", "BabyAI-Nope-v0"], "level 'BabyAI-Nope-v0' is not in"),
    ],
)
def test_bad_show_input_fails_clearly(two_level_folder, capsys, args, message):
    before = _files(two_level_folder)
    assert main(["show", str(two_level_folder), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert _files(two_level_folder) == before


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
    assert main(["validate", str(foreign)]) == 2  # not a dataset at all: bad input, nothing to report on
    assert "error: " in (err := capsys.readouterr().err) and "not a thought dataset folder" in err


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


# ------------------------------------------------------------------------------------ bad input, more
@pytest.fixture(scope="module")
def sharded_folder(tmp_path_factory) -> Path:
    """Two train shards, so a card can be narrowed to one of them."""
    root = tmp_path_factory.mktemp("sharded") / "dataset"
    run_cli("dataset_builder", "generate", "--level", TINY_LEVEL, "--splits", "train=6,validation=3,test=3",
            "--shard-size", "3", "--output", str(root))  # fmt: skip
    return root


TRAIN_GLOB = f"path: data/{TINY_LEVEL}/train-*.parquet"


def _narrow_card(folder: Path) -> None:
    card = folder / "README.md"
    assert card.read_text().count(TRAIN_GLOB) == 1
    card.write_text(card.read_text().replace(TRAIN_GLOB, f"path: data/{TINY_LEVEL}/train-00000-of-00002.parquet"))


def _delete_shard(folder: Path) -> None:
    (folder / f"data/{TINY_LEVEL}/train-00001-of-00002.parquet").unlink()


def _copy_shard_over_another(folder: Path) -> None:
    data = folder / "data" / TINY_LEVEL
    shutil.copyfile(data / "train-00000-of-00002.parquet", data / "train-00001-of-00002.parquet")


def test_validate_catches_a_card_narrowed_to_fewer_shards(sharded_folder, tmp_path, capsys):
    folder = Path(shutil.copytree(sharded_folder, tmp_path / "dataset"))
    assert main(["validate", str(folder)]) == 0
    _narrow_card(folder)
    # load_dataset would read 3 of the 6 train episodes, silently
    assert len(datasets.load_dataset(str(folder), TINY_LEVEL, split="train", cache_dir=str(tmp_path / "c"))) == 3
    capsys.readouterr()
    assert main(["validate", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "INVALID" in out and f"config {TINY_LEVEL} split train reads 1 of the 2 shards" in out
    assert "train-00001-of-00002.parquet" in out and "python -m dataset_builder card" in out
    assert main(["card", str(folder)]) == 0  # the fix the message names
    assert main(["validate", str(folder)]) == 0


def _trainer(dataset: str | Path, output: Path) -> subprocess.CompletedProcess:
    tiny = [part for key, value in TINY.items() for part in (f"--{key}", str(value))]
    command = [sys.executable, "train/run.py", "--dataset", str(dataset), "--output_dir", str(output), *tiny,
               "--batch_size", "3", "--epochs", "1", "--warmup_epochs", "0", "--lr_halving_epochs", "1",
               "--stop_teacher_forcing_epoch", "1", "--report_to", "none", "--cpu"]  # fmt: skip
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=environment)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_delete_shard, f"shard data/{TINY_LEVEL}/train-00001-of-00002.parquet is missing"),
        (_narrow_card, "split train reads 1 of the 2 shards"),
        (_copy_shard_over_another, "train-00001-of-00002.parquet does not match its recorded checksum"),
    ],
    ids=["deleted-shard", "narrowed-card", "copied-shard"],
)
def test_trainer_refuses_a_dataset_folder_that_fails_its_manifest(sharded_folder, tmp_path, damage, message):
    folder = Path(shutil.copytree(sharded_folder, tmp_path / "dataset"))
    damage(folder)
    done = _trainer(folder, tmp_path / "run")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "error: " in done.stderr and message in done.stderr
    assert f"python -m dataset_builder validate {folder}" in done.stderr
    assert not (tmp_path / "run" / "model").exists()


def test_trainer_names_the_cause_when_a_hub_dataset_cannot_be_loaded(tmp_path):
    done = _trainer("someorg/no-such-thoughts", tmp_path / "run")  # offline: the Hub cannot be reached
    assert done.returncode == 2, done.stderr[-3000:]  # was a traceback: ConnectionError was not caught
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("error: cannot load the dataset 'someorg/no-such-thoughts': ConnectionError: ")
    assert "OfflineModeIsEnabled" in error


def test_describe_error_keeps_every_cause():
    from hf_thought_cloning.training.data import describe_error

    try:
        try:
            {}["images"]
        except KeyError as missing:
            raise ValueError("cannot build the episode store") from missing
    except ValueError as error:
        assert describe_error(error) == "ValueError: cannot build the episode store; caused by KeyError: 'images'"


def _file_at_output(tmp_path: Path) -> tuple[Path, list[str]]:
    (tmp_path / "taken").write_text("a file")
    return tmp_path / "taken" / "dataset", ["--level", TINY_LEVEL, "--splits", "train=2,test=2"]


def _strict_template_gap(tmp_path: Path) -> tuple[Path, list[str]]:
    # MiniBossLevel seed 797 at 1% noise: a stale plan no template describes (tests/test_thoughts.py)
    return tmp_path / "dataset", ["--level", MINIBOSS, "--seeds", "797:798", "--splits", "train=1.0",
                                  "--strict-templates"]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "messages"),
    [
        (_file_at_output, ["lies inside", "which is a file"]),
        (_strict_template_gap, ["seed=797 step=63", "template_gap", "continue with --resume: python -m"]),
    ],
    ids=["output-under-a-file", "strict-template-gap"],
)
def test_generate_errors_during_a_run_name_the_problem_and_leave_nothing_half_written(
    tmp_path, capsys, case, messages
):
    output, args = case(tmp_path)
    before = _files(tmp_path)
    assert main(["generate", *args, "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and all(message in err for message in messages), err
    written = {name for name in _files(tmp_path) if name not in before}
    # at most the plan (generation/manifest.json, what --resume continues from); no shard, no temporary file
    assert written <= {"dataset/generation/manifest.json"}, written
    assert {k: v for k, v in _files(tmp_path).items() if k in before} == before


def test_ctrl_c_during_generate_says_resume_and_the_resumed_folder_is_complete(tmp_path):
    output = tmp_path / "dataset"
    command = [sys.executable, "-m", "dataset_builder", *GENERATE[:-2], "--noise-rate", "0", "--output",
               str(output)]  # fmt: skip
    command[command.index("--splits") + 1] = "train=60,validation=3,test=3"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    # A shell's background job ignores SIGINT, and its children inherit that (Python then installs no Ctrl-C
    # handler): restore the default so the test runs the same in CI and under `nohup ... &`.
    process = subprocess.Popen(command, cwd=REPO_ROOT, stderr=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    seen = b""
    while b"generating" not in seen:  # the progress bar: shards are being generated
        chunk = os.read(process.stderr.fileno(), 4096)
        assert chunk, "generate ended before its progress bar appeared"
        seen += chunk
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=120)
    err = (seen + rest).decode()
    assert process.returncode == 130, err
    assert "error: interrupted" in err and "continue with --resume: python -m dataset_builder generate" in err
    assert "Traceback" not in err
    assert not list(output.rglob("*.tmp*")) and not (output / "README.md").exists()  # nothing half-written
    resume = err.split("continue with --resume: ", 1)[1].split()
    assert resume[-1] == "--resume"
    done = subprocess.run([sys.executable, *resume[1:]], cwd=REPO_ROOT, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert main(["validate", str(output)]) == 0


def _break_card_yaml(folder: Path) -> None:
    card = folder / "README.md"
    card.write_text(card.read_text().replace("configs:", "configs: [unclosed", 1))


def _manifest_as_list(folder: Path) -> None:
    (folder / "generation/manifest.json").write_text("[1, 2]\n")


def _manifest_without_splits(folder: Path) -> None:
    path = folder / "generation/manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["splits"]
    path.write_text(json.dumps(manifest))


def _shard_stats_not_json(folder: Path) -> None:
    (folder / f"generation/shards/{TINY_LEVEL}/test-00000-of-00001.json").write_text("{not json")


@pytest.mark.parametrize(
    ("damage", "messages"),
    [
        (_break_card_yaml, ["README.md: its YAML front matter does not parse", "dataset_builder card"]),
        (_manifest_as_list, ["manifest.json holds a JSON list, not a manifest object"]),
        (_manifest_without_splits, ["manifest.json lacks splits"]),
        (_shard_stats_not_json, [f"shards/{TINY_LEVEL}/test-00000-of-00001.json is not valid JSON", "--resume"]),
    ],
    ids=["card-yaml", "manifest-list", "manifest-without-splits", "shard-stats-not-json"],
)
def test_validate_unreadable_dataset_files_fail_clearly(generated_folder, tmp_path, capsys, damage, messages):
    folder = Path(shutil.copytree(generated_folder, tmp_path / "dataset"))
    damage(folder)
    before = _files(folder)
    assert main(["validate", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and all(message in err for message in messages), err
    assert _files(folder) == before  # validate never writes


def test_data_cli_help_imports_neither_torch_nor_the_model_package():
    """Every `--help` of the data CLI is answered before any heavy import (it takes milliseconds)."""
    script = (
        "import runpy, sys\n"
        "for command in ([], ['generate'], ['validate'], ['show'], ['card'], ['push']):\n"
        "    sys.argv = ['dataset_builder', *command, '--help']\n"
        "    try:\n        runpy.run_module('dataset_builder', run_name='__main__')\n"
        "    except SystemExit as exit:\n        assert exit.code == 0, (command, exit.code)\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules}\n"
        "               & {'torch', 'hf_thought_cloning', 'datasets', 'minigrid'})\n"
        "print('heavy:', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "heavy: []"
    assert "generate" in done.stdout


def test_no_data_command_imports_torch_or_the_model_package(tmp_path):
    output = tmp_path / "dataset"
    script = (
        "import sys\n"
        "from dataset_builder.cli import main\n"
        f"folder = {str(output)!r}\n"
        f"assert main(['generate', '--level', {TINY_LEVEL!r}, '--episodes', '4', '--splits', 'train=2,test=2',"
        " '--output', folder]) == 0\n"
        "assert main(['validate', folder]) == 0\n"
        "assert main(['show', folder]) == 0\n"
        "assert main(['card', folder, '--repo_id', 'org/name']) == 0\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'hf_thought_cloning'})\n"
        "assert heavy == [], heavy\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]


def test_no_module_of_dataset_builder_imports_hf_thought_cloning():
    """The data package is the lower layer: hf_thought_cloning may import it, never the other way round."""
    offenders = []
    for path in sorted((REPO_ROOT / "dataset_builder").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [alias.name for alias in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )  # fmt: skip
            offenders += [f"{path.name}:{node.lineno} {n}" for n in names if n.split(".")[0] == "hf_thought_cloning"]
    assert offenders == []
