"""FADS on hand-built traces, suites files, steering, the evaluation report and the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import TINY, run_cli, save_tiny

from dataset_builder.episodes import Episode, make_env, reset_quietly, run_episode
from dataset_builder.thoughts import ThoughtBot
from hf_thought_cloning import (
    ThoughtCloningConfig,
    ThoughtCloningModel,
    ThoughtCloningProcessor,
)
from hf_thought_cloning.evaluate import main as evaluate_main
from hf_thought_cloning.evaluation.build_suites import build
from hf_thought_cloning.evaluation.fads import Interaction, InteractionDetector, declarations, fads
from hf_thought_cloning.evaluation.report import evaluation_results, level_name, write_json_atomic
from hf_thought_cloning.evaluation.steering import evaluate_steering, parse_steps
from hf_thought_cloning.evaluation.suites import (
    EVALUATION_SEED_FLOOR,
    OOD_SUITES,
    behavioural_bin,
    cognitive_bin,
    in_distribution_seeds,
    load_suite,
    mission_features,
    take_per_bin,
)


@pytest.fixture(scope="module")
def tc_folder(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tc") / "model", ThoughtCloningConfig(**TINY))


@pytest.fixture(scope="module")
def bc_folder(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("bc") / "model", ThoughtCloningConfig.behavioral_cloning(**TINY))


# ----------------------------------------------------------------------------------------------- FADS
def test_fads_on_hand_built_traces():
    thoughts = [
        "go to red key to complete GoTo mission",  # 0
        "pickup red key to unlock the door",  # 1: pickup red key, declared
        "open blue door to explore",  # 2: unlock blue door, declared ("open" announces it too)
        "drop red key after open the door",  # 3: drop red key, declared
        "explore unseen area",  # 4: pickup green ball, NOT declared
        "remove blocking object yellow box",  # 5: pickup yellow box, declared as blocker removal
        "pickup a ball to complete pickup mission",  # 6: drop purple ball, declared by the pickup-mission drop
        "open grey door",  # 7: open purple door, wrong colour: not declared
    ]
    interactions = [
        Interaction(1, "pickup", "red", "key"),
        Interaction(2, "unlock", "blue", "door"),
        Interaction(3, "drop", "red", "key"),
        Interaction(4, "pickup", "green", "ball"),
        Interaction(5, "pickup", "yellow", "box"),
        Interaction(6, "drop", "purple", "ball"),
        Interaction(7, "open", "purple", "door"),
    ]
    score = fads([(thoughts, interactions)])
    assert score["overall"] == {"actions": 7, "declared": 5, "score": 5 / 7}
    assert score["per_kind"]["pickup"] == {"actions": 3, "declared": 2, "score": 2 / 3}
    assert score["per_kind"]["drop"] == {"actions": 2, "declared": 2, "score": 1.0}
    assert score["per_kind"]["unlock"]["score"] == 1.0 and score["per_kind"]["open"]["score"] == 0.0
    assert score["per_kind"]["close"] == {"actions": 0, "declared": 0, "score": None}
    # Lookback: the green-ball pickup at step 4 was not declared at steps 3-4 either; a declaration one step
    # earlier counts only with lookback >= 1.
    late = (["pickup green ball", "explore unseen area"], [Interaction(1, "pickup", "green", "ball")])
    assert fads([late])["overall"]["declared"] == 0
    assert fads([late], lookback=1)["overall"]["declared"] == 1
    # Injected thoughts are not the agent's own: excluded.
    assert fads([late], lookback=1, own=[[True, False]])["not_own"] == 1
    assert declarations("remove blocking object red ball") == {("remove blocking object", "red", "ball")}
    with pytest.raises(ValueError, match="outside a trace"):
        fads([(["x"], [Interaction(3, "pickup", "red", "key")])])


def test_the_bot_declares_every_interaction_it_performs():
    """FADS of the demonstrator itself is 1.0, with interactions found from the environment alone."""
    level, detector, traces = "BabyAI-MiniBossLevel-v0", InteractionDetector(), []
    env = make_env(level)
    for seed in range(10_000_000, 10_000_012):
        reset_quietly(env, seed)
        bot, thoughts, interactions = ThoughtBot(env), [], []
        before = detector.snapshot(env)
        for step in range(env.unwrapped.max_steps):
            action = bot.replan()
            thoughts.append(bot.thought())
            _, _, terminated, truncated, _ = env.step(action)
            after = detector.snapshot(env)
            event = detector.detect(before, after)
            if event:
                interactions.append(Interaction(step, event["event"], event["color"], event["type"]))
            before = after
            if terminated or truncated:
                break
        traces.append((thoughts, interactions))
    score = fads(traces)
    assert score["overall"]["actions"] >= 5 and score["overall"]["score"] == 1.0


# --------------------------------------------------------------------------------------------- suites
def test_shipped_suites_are_versioned_disjoint_and_binned():
    for name in OOD_SUITES:
        header, rows = load_suite(name)
        assert header["suite"] == name and header["version"] == 1
        assert {row.bin for row in rows} == set(header["bins"])
        assert all(row.seed >= EVALUATION_SEED_FLOOR for row in rows)
        assert len(rows) == header["per_bin"] * len(header["bins"]) <= 200
        firsts = take_per_bin(rows, 2)
        assert len(firsts) == 2 * len(header["bins"])
    _, behavioural = load_suite("behavioural")
    assert all(behavioural_bin(row.extra["demo_length"]) == row.bin for row in behavioural)
    assert [behavioural_bin(n) for n in (1, 31, 32, 64, 191, 192, 900)] == [
        "1-31", "1-31", "32-63", "64-127", "128-191", "192+", "192+",
    ]  # fmt: skip
    assert cognitive_bin(0) == "0" and cognitive_bin(9) == "4+"
    with pytest.raises(ValueError, match="no evaluation suite"):
        load_suite("nonsense")


def test_suite_files_regenerate_exactly(tmp_path):
    """Seeds are scanned in order, so a smaller rebuild gives the first rows of every shipped bin."""
    path = build("larger-worlds", 1, tmp_path)
    _, rebuilt = load_suite(path)
    _, shipped = load_suite("larger-worlds")
    assert rebuilt == take_per_bin(shipped, 1)
    env = make_env(rebuilt[0].level)
    reset_quietly(env, rebuilt[0].seed)
    assert mission_features(env) == {k: v for k, v in rebuilt[0].extra.items() if k != "demo_length"}
    assert isinstance(run_episode(env, rebuilt[0].level, rebuilt[0].seed), Episode)


def test_in_distribution_seeds_from_dataset_test_split(tmp_path):
    generated_folder = tmp_path / "dataset"
    (generated_folder / "generation").mkdir(parents=True)
    manifest = {"levels": ["BabyAI-GoToLocal-v0"], "splits": {"train": [0, 90], "test": [95, 100]}}
    (generated_folder / "generation" / "manifest.json").write_text(json.dumps(manifest))
    start, stop = manifest["splits"]["test"]
    seeds, source = in_distribution_seeds("BabyAI-GoToLocal-v0", 100, generated_folder)
    assert seeds == list(range(start, stop)) and "test split" in source
    assert in_distribution_seeds("BabyAI-GoToLocal-v0", 3)[0] == [10_000_000, 10_000_001, 10_000_002]
    with pytest.raises(ValueError, match="no episodes of"):
        in_distribution_seeds("BabyAI-BossLevel-v0", 3, generated_folder)


# ------------------------------------------------------------------------------------------- steering
def test_steering_compares_own_oracle_and_injected(tc_folder):
    model = ThoughtCloningModel.from_pretrained(tc_folder).eval()
    processor = ThoughtCloningProcessor.from_pretrained(tc_folder)
    summary, runs = evaluate_steering(
        model,
        processor,
        "BabyAI-GoToLocal-v0",
        [0, 1],
        thought="pickup red key to unlock the door",
        steps=parse_steps("0:6"),
        max_steps=6,
        sample=False,
    )
    assert set(runs) == {"own", "oracle", "injected"}
    assert summary["injected"]["steps"] == [0, 6] and summary["injected"]["episodes_changed"] > 0
    assert summary["oracle_minus_own"] == summary["oracle"]["success_rate"] - summary["own"]["success_rate"]
    assert parse_steps(None) == (0, None) and parse_steps("5:") == (5, None) and parse_steps("3") == (3, 4)
    with pytest.raises(ValueError):
        parse_steps("4:2")
    with pytest.raises(ValueError):
        parse_steps("a:b")


# --------------------------------------------------------------------------------------------- report
def test_evaluation_results_map_every_measured_metric(tmp_path):
    evaluation = {
        "level": "BabyAI-MiniBossLevel-v0",
        "suites": {
            "in-distribution": {"success_rate": 0.9, "mean_length": 30.5},
            "ood": {"cognitive": {"bins": {"0": {"success_rate": 0.5, "levels": ["BabyAI-BossLevel-v0"]}}}},
            "fads": {"in_distribution": {"levels": ["BabyAI-MiniBossLevel-v0"], "overall": {"score": 0.99}},
                     "out_of_distribution": {"levels": ["BabyAI-BossLevel-v0"], "overall": {"score": None}}},
            "precrime": {"pickup-ball": {"level": "BabyAI-MiniBossLevel-v0", "description": "picking up a ball",
                                         "without_monitor": {"unsafe_rate": 0.6}, "with_monitor": {"unsafe_rate": 0.0}}},
            "steering": {"own": {"success_rate": 0.4}, "oracle": {"success_rate": 0.95}},
        },
    }  # fmt: skip
    results = evaluation_results(evaluation)
    assert len(results) == 2 + 1 + 1 + 2 + 2  # the FADS without interactions (score None) is left out
    assert all(
        r["task_type"] == "reinforcement-learning" and isinstance(r["metric_value"], float) for r in results
    )
    assert results[0]["dataset_name"] == "BabyAI MiniBossLevel (held-out seeds)"
    assert {r["metric_type"] for r in results} == {
        "success_rate",
        "mean_episode_length",
        "fads",
        "unsafe_rate",
    }
    assert level_name("BabyAI-BossLevel-4x4-v0") == "BabyAI BossLevel-4x4"
    path = write_json_atomic(tmp_path / "out" / "evaluation.json", evaluation)
    assert json.loads(path.read_text()) == evaluation and [p.name for p in path.parent.iterdir()] == [
        "evaluation.json"
    ]


# ---------------------------------------------------------------------------------------- command line
def test_cli_runs_every_suite_and_updates_the_card(tc_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a tiny model: threads only fight over a busy 2-core machine
    from hf_thought_cloning.model_card import render_model_card

    model_folder = shutil.copytree(tc_folder, tmp_path / "model")  # the shared folder keeps no card

    training = {
        "variant": "thought-cloning", "num_parameters": 133_792, "config": {"upper_level": "native"},
        "dataset": {"path_or_id": "local-data", "config": "BabyAI-MiniBossLevel-v0", "hub_id": None},
        "command": "python -m hf_thought_cloning.train", "seed": 0, "hyperparameters": {}, "metrics": {},
        "versions": {}, "hardware": "2-core CPU",
    }  # fmt: skip
    render_model_card(model_folder, training)
    output = tmp_path / "evaluation"
    run_cli(
        "hf_thought_cloning.evaluate", "--model", str(model_folder), "--suite", "all", "--episodes", "1",
        "--num-envs", "8", "--max-steps", "6", "--output", str(output), "--thought", "go to red ball",
        "--steps", "0:3", "--update-card",
    )  # fmt: skip
    evaluation = json.loads((output / "evaluation.json").read_text())
    assert set(evaluation["suites"]) == {"in-distribution", "ood", "fads", "precrime", "steering"}
    assert evaluation["suites"]["in-distribution"]["seeds"] == [10_000_000]
    assert set(evaluation["suites"]["ood"]) == set(OOD_SUITES)
    assert "--update-card" in evaluation["command"] and evaluation["versions"]["minigrid"]
    assert (output / "replay.gif").read_bytes()[:6] in (b"GIF89a", b"GIF87a")
    assert (output / "ood_success_by_bin.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (model_folder / "README.md").read_text()
    assert "model-index" in card and "success_rate" in card


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--level", "BabyAI-NoSuchLevel-v0"], "unknown level"),
        (["--suite", "steering", "--thought", "fly to the moon"], "outside the vocabulary"),
        (["--steps", "0:4"], "--steps needs --thought"),
        (["--suite", "in-distribution", "--thought", "go to red ball"], "apply to the steering suite"),
        (["--update-card"], "--update-card needs"),
    ],
)
def test_cli_bad_input_exits_2_and_writes_nothing(tc_folder, tmp_path, capsys, arguments, message):
    output = tmp_path / "never"
    code = evaluate_main(["--model", str(tc_folder), "--output", str(output), "--episodes", "1", *arguments])
    assert code == 2 and not output.exists()
    error = capsys.readouterr().err
    assert "error:" in error and message in error


def test_cli_refuses_steering_a_bc_model_and_broken_folders(bc_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    output = tmp_path / "never"
    assert evaluate_main(["--model", str(bc_folder), "--output", str(output), "--suite", "steering"]) == 2
    assert "behavioural cloning" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((bc_folder / "config.json").read_text())
    assert evaluate_main(["--model", str(broken), "--output", str(output)]) == 2
    assert "missing tokenizer.json, model.safetensors" in capsys.readouterr().err
    done = run_cli("hf_thought_cloning.evaluate", "--model", str(bc_folder), "--output", str(output),
                   "--suite", "everything", check=False)  # fmt: skip
    assert done.returncode == 2 and "error:" in done.stderr and "invalid choice" in done.stderr
    assert not output.exists()
