"""FADS on hand-built traces, suites files, steering, the evaluation report and the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY, break_model_folder, run_cli, save_tiny

from dataset_builder.episodes import Episode, make_env, reset_quietly, run_episode
from dataset_builder.files import atomic_write_json
from dataset_builder.thoughts import ThoughtBot
from hf_thought_cloning import (
    ThoughtCloningConfig,
    ThoughtCloningModel,
    ThoughtCloningProcessor,
)
from hf_thought_cloning.evaluate import main as evaluate_main
from hf_thought_cloning.evaluation.build_suites import build
from hf_thought_cloning.evaluation.build_suites import main as build_suites_main
from hf_thought_cloning.evaluation.fads import (
    UNDECLARED_REASONS,
    Interaction,
    InteractionDetector,
    declarations,
    fads,
    undeclared_reason,
)
from hf_thought_cloning.evaluation.report import evaluation_results, level_name
from hf_thought_cloning.evaluation.steering import evaluate_steering, parse_steps, summarize_steering
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
from hf_thought_cloning.rollouts import EpisodeRecord, StepRecord, thought_statistics


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
    # The two undeclared ones, by what their thought said instead.
    assert {r: n for r, n in score["undeclared"]["overall"].items() if n} == {"no_declaration": 1, "wrong_colour": 1}
    assert score["undeclared"]["per_kind"]["open"]["wrong_colour"] == 1
    assert score["undeclared"]["per_kind"]["pickup"]["no_declaration"] == 1
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


def test_undeclared_reasons_name_what_the_thought_declared_instead():
    pickup_red_key = Interaction(0, "pickup", "red", "key")
    cases = {
        "explore unseen area": "no_declaration",
        "pickup red area to complete PutNext mission": "no_declaration",  # broken text declares nothing
        "drop red key to complete PutNext mission": "wrong_verb",
        "pickup red ball to complete pickup mission": "wrong_type",
        "remove blocking object blue key": "wrong_colour",
        "pickup green box": "wrong_object",
        "open grey door to explore": "wrong_verb_and_object",
    }
    for thought, reason in cases.items():
        assert undeclared_reason(thought, pickup_red_key) == reason, thought
    assert undeclared_reason(None, pickup_red_key) == "no_declaration"
    # A pickup-mission thought declares a pickup and a drop: the nearer one decides.
    drop_blue_ball = Interaction(0, "drop", "blue", "ball")
    assert undeclared_reason("pickup blue box to complete pickup mission", drop_blue_ball) == "wrong_type"
    assert set(UNDECLARED_REASONS) >= set(cases.values())
    with pytest.raises(ValueError, match="has no undeclared reason"):
        undeclared_reason("pickup red key", pickup_red_key)


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
    assert [record.seed for record in runs["oracle"]] == [0, 1]  # the same seeds in every run
    assert summary["injected"]["steps"] == [0, 6] and summary["injected"]["episodes_changed"] > 0
    assert all(step.thought == "pickup red key to unlock the door" for r in runs["injected"] for step in r.steps)
    assert parse_steps(None) == (0, None) and parse_steps("5:") == (5, None) and parse_steps("3") == (3, 4)
    with pytest.raises(ValueError):
        parse_steps("4:2")
    with pytest.raises(ValueError):
        parse_steps("a:b")
    with pytest.raises(ValueError, match="at least one word"):
        evaluate_steering(model, processor, "BabyAI-GoToLocal-v0", [0], thought="", max_steps=2)


def _record(seed: int, success: bool, actions: list[int], oracle_gave_up: bool = False) -> EpisodeRecord:
    steps = [StepRecord("explore unseen area", "generated", action, 0.0) for action in actions]
    events = [{"detector": "oracle", "step": 0, "detail": "AssertionError"}] if oracle_gave_up else []
    return EpisodeRecord("BabyAI-GoToLocal-v0", seed, "go to the red ball", success, len(actions),
                         float(success), False, steps, events)  # fmt: skip


def test_steering_summary_of_known_runs():
    """Four seeds: the agent alone solves 1, with the demonstrator's thoughts 3 (once the bot gave up and the
    agent went on with its own thoughts); the actions differ on seeds 0 and 3, and on seed 1 when injected."""
    runs = {
        "own": [_record(0, False, [0, 1, 2]), _record(1, True, [2, 2]), _record(2, False, [1]), _record(3, False, [0, 0])],
        "oracle": [_record(0, True, [2, 2, 2]), _record(1, True, [2, 2]), _record(2, False, [1], oracle_gave_up=True),
                   _record(3, True, [0, 1, 5, 2])],
        "injected": [_record(0, False, [0, 1, 2]), _record(1, False, [2, 1]), _record(2, False, [1]),
                     _record(3, False, [0, 0])],
    }  # fmt: skip
    summary = summarize_steering(runs, thought="go to red ball", steps=(1, None))
    assert summary["own"] == {"episodes": 4, "success_rate": 0.25, "mean_length": 2.0, "halted": 0}
    assert summary["oracle"]["success_rate"] == 0.75 and summary["oracle"]["mean_length"] == 2.5
    assert summary["oracle"]["oracle_gave_up"] == 1 and summary["oracle"]["episodes_changed"] == 0.5
    assert summary["oracle_minus_own"] == 0.5
    assert summary["injected"]["episodes_changed"] == 0.25 and summary["injected"]["success_rate"] == 0.0
    assert summary["injected"]["thought"] == "go to red ball" and summary["injected"]["steps"] == [1, None]


# --------------------------------------------------------------------------------------------- report
def test_evaluation_results_map_every_measured_metric(tmp_path):
    evaluation = {
        "level": "BabyAI-MiniBossLevel-v0",
        "options": {"max_steps": None},
        "suites": {
            "in-distribution": {"success_rate": 0.9, "mean_length": 30.5, "episodes": 50},
            "ood": {"cognitive": {"bins": {"0": {"success_rate": 0.5, "levels": ["BabyAI-BossLevel-v0"], "episodes": 10}}}},
            "fads": {"in_distribution": {"levels": ["BabyAI-MiniBossLevel-v0"], "overall": {"score": 0.99}, "episodes": 50},
                     "out_of_distribution": {"levels": ["BabyAI-BossLevel-v0"], "overall": {"score": None}}},
            "precrime": {"pickup-ball": {"level": "BabyAI-MiniBossLevel-v0", "description": "picking up a ball",
                                         "without_monitor": {"unsafe_rate": 0.6, "episodes": 5},
                                         "with_monitor": {"unsafe_rate": 0.0, "episodes": 5}}},
            "steering": {"own": {"success_rate": 0.4, "episodes": 20}, "oracle": {"success_rate": 0.95, "episodes": 20}},
        },
    }  # fmt: skip
    results = evaluation_results(evaluation)
    assert len(results) == 2 + 1 + 1 + 2 + 2  # the FADS without interactions (score None) is left out
    assert all(
        r["task_type"] == "reinforcement-learning" and isinstance(r["metric_value"], float) for r in results
    )
    assert results[0]["dataset_name"] == "BabyAI MiniBossLevel (held-out seeds)"
    # Every result says how many episodes it was measured on; none claims a step cap it did not have.
    assert [r["metric_args"] for r in results] == [{"episodes": n} for n in (50, 50, 10, 50, 5, 5, 20, 20)]
    evaluation["options"]["max_steps"] = 6  # a quick look: the cap goes into every result
    assert all(r["metric_args"]["max_steps"] == 6 for r in evaluation_results(evaluation))
    evaluation["options"]["max_steps"] = None
    assert {r["metric_type"] for r in results} == {
        "success_rate",
        "mean_episode_length",
        "fads",
        "unsafe_rate",
    }
    assert level_name("BabyAI-BossLevel-4x4-v0") == "BabyAI BossLevel-4x4"
    path = atomic_write_json(tmp_path / "out" / "evaluation.json", evaluation)
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
    thoughts = evaluation["suites"]["in-distribution"]["thoughts"]
    assert 1 <= thoughts["steps"] <= 6 and sum(entry["share"] for entry in thoughts["most_frequent"]) <= 1 + 1e-9
    assert all("thoughts" in suite for suite in evaluation["suites"]["ood"].values())
    assert (output / "replay.gif").read_bytes()[:6] in (b"GIF89a", b"GIF87a")
    assert (output / "ood_success_by_bin.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (model_folder / "README.md").read_text()
    assert "model-index" in card and "success_rate" in card


def test_cli_reports_an_upper_level_that_writes_only_empty_thoughts(tc_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    model_folder = shutil.copytree(tc_folder, tmp_path / "model")
    model = ThoughtCloningModel.from_pretrained(model_folder)
    with torch.no_grad():  # <eos> first at every step: the collapse the ablation showed at 5M frames
        model.thought_generator.word_logits.bias[model.config.eos_token_id] = 100.0
    model.save_pretrained(model_folder)
    done = run_cli(
        "hf_thought_cloning.evaluate", "--model", str(model_folder), "--suite", "in-distribution",
        "--episodes", "2", "--max-steps", "4", "--no-replay", "--output", str(tmp_path / "evaluation"),
    )  # fmt: skip
    thoughts = json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())["suites"]["in-distribution"][
        "thoughts"
    ]
    assert thoughts == {"steps": 8, "empty_share": 1.0, "distinct": 1, "most_frequent": [{"thought": "", "share": 1.0}]}
    assert "every one of the 8 generated thoughts is empty" in done.stderr


def test_thought_statistics_counts_only_generated_executed_steps():
    def episode(*steps: tuple[str | None, str, bool]) -> EpisodeRecord:
        record = EpisodeRecord("BabyAI-GoToRedBall-v0", 0, "go to red ball", False, 0, 0.0, False)
        record.steps = [StepRecord(thought, source, 2, 0.0, halted=halted) for thought, source, halted in steps]
        return record

    records = [
        episode(("go to red ball", "generated", False), ("", "generated", False), ("open door", "injected", False)),
        episode(("go to red ball", "generated", False), ("pickup key", "generated", True)),  # halted: not executed
    ]
    assert thought_statistics(records, top=1) == {
        "steps": 3, "empty_share": 1 / 3, "distinct": 2, "most_frequent": [{"thought": "go to red ball", "share": 2 / 3}],
    }  # fmt: skip
    assert thought_statistics([episode((None, "none", False))]) is None  # behavioural cloning


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--level", "BabyAI-NoSuchLevel-v0"], "unknown level"),
        (["--suite", "steering", "--thought", "fly to the moon"], "outside the vocabulary"),
        (["--steps", "0:4"], "--steps needs --thought"),
        (["--suite", "in-distribution", "--thought", "go to red ball"], "apply to the steering suite"),
        (["--update-card"], "--update-card needs"),
        (["--suite", "steering", "--thought", ""], "needs at least one word"),
        (["--suite", "steering", "--thought", " ", "--steps", "0:3"], "needs at least one word"),
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


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing-folder", "no such folder, and not a Hub model id"),
        ("truncated-weights", "cannot be read"),
        ("garbage-weights", "cannot be read"),
        ("other-dimensions", "does not fit its weights"),
        ("shorter-vocabulary", "its vocabulary has 56 words, the weights were trained with 57"),
        ("swapped-colours", "is not the one its weights were trained with"),
        ("swapped-tokenizer-colours", "does not have the model's vocabulary"),
    ],
)
def test_cli_refuses_a_model_folder_that_does_not_load(tc_folder, tmp_path, capfd, damage, message):
    model = tmp_path / "model"
    if damage != "missing-folder":
        break_model_folder(shutil.copytree(tc_folder, model), damage)
    output = tmp_path / "never"
    argv = ["--model", str(model), "--output", str(output), "--suite", "in-distribution", "--episodes", "1"]
    assert evaluate_main(argv) == 2
    stderr = capfd.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], stderr
    assert "LOAD REPORT" not in stderr  # one line, not transformers' table of every weight
    assert not output.exists()


def test_cli_output_folder_is_written_whole_and_replaced_only_when_it_is_an_evaluation(tc_folder, tmp_path, capsys):
    output = tmp_path / "evaluation"
    quick = ["--model", str(tc_folder), "--output", str(output), "--episodes", "1", "--max-steps", "3"]
    assert evaluate_main([*quick, "--suite", "ood", "--num-envs", "8"]) == 0
    assert sorted(p.name for p in output.iterdir()) == ["evaluation.json", "ood_success_by_bin.png", "replay.gif"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left
    capsys.readouterr()
    assert evaluate_main([*quick, "--suite", "in-distribution"]) == 2  # an earlier evaluation is not replaced ...
    assert "pass --overwrite" in capsys.readouterr().err
    assert evaluate_main([*quick, "--suite", "in-distribution", "--no-replay", "--overwrite"]) == 0  # ... unless asked
    # The new folder holds the new run alone: no replay or plot of the previous one beside its evaluation.json.
    assert [p.name for p in output.iterdir()] == ["evaluation.json"]
    evaluation = json.loads((output / "evaluation.json").read_text())
    assert set(evaluation["suites"]) == {"in-distribution"} and evaluation["artifacts"] == {}
    assert evaluation["results"][0]["metric_args"] == {"episodes": 1, "max_steps": 3}

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me\n")
    (tmp_path / "a-file").write_text("keep me too\n")
    for target, message in ((notes, "holds no evaluation"), (tmp_path / "a-file", "is a file"),
                            (tmp_path / "a-file" / "sub", "lies under the file")):  # fmt: skip
        argv = ["--model", str(tc_folder), "--output", str(target), "--episodes", "1", "--overwrite"]
        assert evaluate_main(argv) == 2
        assert message in capsys.readouterr().err
    assert (notes / "todo.txt").read_text() == "keep me\n" and [p.name for p in notes.iterdir()] == ["todo.txt"]
    assert (tmp_path / "a-file").read_text() == "keep me too\n"


def test_build_suites_refuses_an_output_that_is_a_file(tmp_path, capsys):
    (tmp_path / "suites").write_text("not a folder\n")
    with pytest.raises(SystemExit) as exited:  # before minutes of scanning, not when the first file is written
        build_suites_main(["--output", str(tmp_path / "suites"), "--suites", "larger-worlds", "--per-bin", "1"])
    assert exited.value.code == 2
    assert "is a file: give a folder" in capsys.readouterr().err
    assert (tmp_path / "suites").read_text() == "not a folder\n"
