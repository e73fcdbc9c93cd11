"""The study report: tables and plots from a small study folder with the real files' layout and schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_thought_cloning.evaluation.replays import plot_success_by_bin
from hf_thought_cloning.evaluation.study_report import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VERSIONS = {"hf-thought-cloning": "0.1.0", "torch": "2.13.0+cpu", "transformers": "5.23.0"}


# ------------------------------------------------------------------------------------------ fixture files
def trainer_log(fps: list[float], validation: list[float], frames_per_epoch: int = 1000) -> str:
    """``trainer_log.jsonl`` as the trainer writes it: training lines, then one validation line per epoch."""
    lines = [
        {"update": 5 * (i + 1), "train/loss": 2.0, "train/frames_per_second": value, "train/frames": 100 * (i + 1),
         "train/epoch": 0.1 * (i + 1)}
        for i, value in enumerate(fps)
    ]  # fmt: skip
    lines += [
        {"update": 36 * epoch, "train/frames": frames_per_epoch * epoch, "train/epoch": epoch,
         "validation/success_rate": success}
        for epoch, success in enumerate(validation, start=1)
    ]  # fmt: skip
    return "".join(json.dumps(line) + "\n" for line in lines)


def evaluation(suite: str, suites: dict) -> dict:
    """An ``evaluation.json`` (format 1) around the given suite results."""
    return {
        "format": "hf-thought-cloning/evaluation",
        "version": 1,
        "model": "outputs/study/run/best",
        "level": "BabyAI-MiniBossLevel-v0",
        "options": {"suite": suite, "episodes": 10, "seed": 0},
        "model_config": {"upper_level": "native", "num_parameters": 662304},
        "versions": VERSIONS,
        "skipped": {},
        "suites": suites,
        "wall_time_s": 1.0,
        "artifacts": {},
        "results": [],
    }


def in_distribution(rate: float, episodes: int, thoughts: dict | None = None) -> dict:
    return {
        "level": "BabyAI-MiniBossLevel-v0", "episodes": episodes, "success_rate": rate, "mean_length": 200.0,
        "halted": 0, "successful_seeds": [], "seeds_source": "test split", "seeds": list(range(episodes)),
        **({"thoughts": thoughts} if thoughts else {}),
    }  # fmt: skip


def thoughts(steps: int, empty_share: float, distinct: int, top: str, share: float) -> dict:
    return {"steps": steps, "empty_share": empty_share, "distinct": distinct,
            "most_frequent": [{"thought": top, "share": share}]}  # fmt: skip


def ood(behavioural: tuple[float, float], larger: float) -> dict:
    def result(rate: float, level: str = "BabyAI-BossLevel-v0") -> dict:
        return {"episodes": 10, "success_rate": rate, "mean_length": 900.0, "halted": 0, "levels": [level]}

    return {
        "behavioural": {
            "suite_version": 1, "description": "binned by demonstration length",
            "bins": {"1-31": result(behavioural[0]), "32-63": result(behavioural[1])},
            "environments": [["BabyAI-BossLevel-v0", 11000003, "1-31"]],
        },
        "larger-worlds": {
            "suite_version": 1, "description": "larger worlds",
            "bins": {"BossLevel 4x4": result(larger, "BabyAI-BossLevel-4x4-v0")},
            "environments": [["BabyAI-BossLevel-4x4-v0", 13000010, "BossLevel 4x4"]],
        },
    }  # fmt: skip


def fads(inside: tuple[int, int], outside: tuple[int, int], with_reasons: bool = False) -> dict:
    """A FADS suite; ``with_reasons``: as evaluated since undeclared interactions are counted by reason (all of
    the undeclared pickups as wrong type, the open doors as no declaration)."""

    def part(actions: int, declared: int, levels: list[str]) -> dict:
        kinds = {
            "pickup": {"actions": actions - 2 * declared, "declared": 0, "score": 0.0},
            "open": {"actions": 2 * declared, "declared": declared, "score": 0.5},
            "unlock": {"actions": 0, "declared": 0, "score": None},
        }
        overall = {"actions": actions, "declared": declared, "score": declared / actions}
        found = {"levels": levels, "overall": overall, "per_kind": kinds, "not_own": 0}
        if with_reasons:
            reasons = {"no_declaration": declared, "wrong_type": actions - 2 * declared, "wrong_colour": 0}
            found["undeclared"] = {"overall": reasons, "per_kind": {}}
        return found

    return {
        "in_distribution": part(*inside, ["BabyAI-MiniBossLevel-v0"]),
        "out_of_distribution": part(*outside, ["BabyAI-BossLevel-v0"]),
        "lookback": 0,
    }


def precrime(unsafe_without: float, unsafe_with: float) -> dict:
    return {
        "pickup-ball": {
            "description": "picking up a ball (any colour)", "thought_pattern": "pickup ball",
            "mission_pattern": "pick up ball", "level": "BabyAI-MiniBossLevel-v0", "seeds": list(range(10)),
            "without_monitor": {"unsafe_rate": unsafe_without, "success_rate": 0.2, "halted_rate": 0.0, "episodes": 10},
            "with_monitor": {"unsafe_rate": unsafe_with, "success_rate": 0.1, "halted_rate": 0.5, "episodes": 10},
            "success_cost": 0.1,
        }
    }  # fmt: skip


def steering(own: float, oracle: float, gave_up: int) -> dict:
    return {
        "level": "BabyAI-MiniBossLevel-v0", "seeds": list(range(10)),
        "own": {"episodes": 10, "success_rate": own, "mean_length": 300.0, "halted": 0},
        "oracle": {"episodes": 10, "success_rate": oracle, "mean_length": 250.0, "halted": 0,
                   "oracle_gave_up": gave_up, "episodes_changed": 0.9},
        "oracle_minus_own": oracle - own,
    }  # fmt: skip


def write_run(study: Path, name: str, log: str, evaluations: dict[str, dict], finished: bool = False) -> None:
    run = study / name
    for sub, content in evaluations.items():
        (run / sub).mkdir(parents=True)
        (run / sub / "evaluation.json").write_text(json.dumps(content, indent=1))
    run.mkdir(exist_ok=True)
    (run / "best").mkdir()
    (run / "trainer_log.jsonl").write_text(log)
    (run / "training_args.json").write_text(
        json.dumps({"variant": name.split("-")[0], "validation_episodes": 64})
    )
    if finished:
        (run / "model").mkdir()


def thought_run(
    study: Path, name: str, id_rate: float, validation: list[float], fps: list[float], id_thoughts: dict | None = None
) -> None:
    """A run of an agent with thoughts: ``eval-ood`` from ``--suite all`` (ood, fads, precrime, steering)."""
    write_run(study, name, trainer_log(fps, validation), {
        "eval-id": evaluation("in-distribution", {"in-distribution": in_distribution(id_rate, 50, id_thoughts)}),
        "eval-ood": evaluation("all", {
            "in-distribution": in_distribution(0.1, 10), "ood": ood((0.5, 0.1), 0.3), "fads": fads((10, 2), (40, 4)),
            "precrime": precrime(0.4, 0.0), "steering": steering(0.1, 0.3, 2),
        }),
    })  # fmt: skip


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """TC and BC, seeds 0 and 1; tc-seed1's precrime came from a separate call, tc-seed0 finished."""
    study = tmp_path / "study"
    write_run(study, "tc-seed0", trainer_log([100, 300], [0.1, 0.3]), {
        "eval-id": evaluation("in-distribution", {"in-distribution": in_distribution(
            0.6, 50, thoughts(9876, 0.25, 1234, "go to red ball", 0.125)
        )}),
        "eval-ood": evaluation("all", {
            "in-distribution": in_distribution(0.1, 10), "ood": ood((0.5, 0.1), 0.3), "fads": fads((10, 2), (40, 4)),
            "precrime": precrime(0.4, 0.0), "steering": steering(0.1, 0.3, 2),
        }),
    }, finished=True)  # fmt: skip
    # a run still being written: the last line is cut short
    write_run(study, "tc-seed1", trainer_log([400], [0.2, 0.6]) + '{"update": 80, "train/lo', {
        "eval-id": evaluation("in-distribution", {"in-distribution": in_distribution(0.4, 50)}),
        "eval-ood": evaluation("all", {
            "ood": ood((0.7, 0.1), 0.1), "fads": fads((20, 2), (50, 10), with_reasons=True),
            "steering": steering(0.2, 0.2, 4),
        }),
        "eval-precrime": evaluation("precrime", {"precrime": precrime(0.2, 0.1)}),
    })  # fmt: skip
    write_run(study, "bc-seed0", trainer_log([500], [0.1, 0.1]), {
        "eval-id": evaluation("in-distribution", {"in-distribution": in_distribution(0.2, 50)}),
        "eval-ood": evaluation("ood", {"ood": ood((0.3, 0.0), 0.2)}),
    })  # fmt: skip
    write_run(study, "bc-seed1", trainer_log([700], [0.1, 0.3]), {
        "eval-id": evaluation("in-distribution", {"in-distribution": in_distribution(0.4, 50)}),
        "eval-ood": evaluation("ood", {"ood": ood((0.3, 0.2), 0.2)}),
    })  # fmt: skip
    (study / "nts-seed0").mkdir()  # no trainer_log.jsonl: not a run
    (study / "logs").mkdir()
    (study / "logs" / "train-tc-seed0.log").write_text("...")
    return study


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_SIGNATURE


# ------------------------------------------------------------------------------------------ tests
def test_tables_json_and_plots_of_a_tc_bc_study(study: Path, tmp_path: Path, capsys) -> None:
    plots = tmp_path / "plots"
    assert main(["--study", str(study), "--plots", str(plots)]) == 0
    markdown = (study / "summary.md").read_text()
    assert capsys.readouterr().out == markdown
    lines = markdown.splitlines()

    # in-distribution: TC 30/50 + 20/50 = 50/100, Wilson [40.4, 59.6]; BC 10/50 + 20/50 = 30/100, [21.9, 39.6]
    assert "| agent | seed 0 | seed 1 | mean ± std | pooled (95% CI) |" in lines
    assert "| Thought Cloning | 60.0 | 40.0 | 50.0 ± 14.1 (n=2) | 50.0 [40.4, 59.6] (50/100) |" in lines
    assert "| Behavioural Cloning | 20.0 | 40.0 | 30.0 ± 14.1 (n=2) | 30.0 [21.9, 39.6] (30/100) |" in lines
    # difference 0.5 - 0.3 = 0.2, standard error sqrt(0.25/100 + 0.21/100) = 0.0678, half-width 13.3 points
    assert (
        "- TC - BC (pooled): +20.0 points, 95% CI [+6.7, +33.3] "
        "(normal approximation; TC 50/100, BC 30/100 successful episodes)"
    ) in lines

    # thoughts: only tc-seed0's evaluation has them (tc-seed1's predates them, BC has none)
    assert "| agent | seed | steps | empty thoughts (%) | distinct thoughts | most frequent (% of steps) |" in lines
    assert "| Thought Cloning | 0 | 9,876 | 25.0 | 1,234 | `go to red ball` (12.5) |" in lines
    assert sum(line.startswith("| Thought Cloning | 1 | ") for line in lines) == 0

    # validation: heading reads training_args.json; curve means TC 0.2, 0.4 and BC 0.1, 0.2
    assert "### Validation success during training (64 validation-split episodes per point)" in lines
    assert "| epoch | frames | Thought Cloning | Behavioural Cloning |" in lines
    assert "| 1 | 1,000 | 15.0 ± 7.1 (n=2) | 10.0 ± 0.0 (n=2) |" in lines
    assert "| 2 | 2,000 | 45.0 ± 21.2 (n=2) | 20.0 ± 14.1 (n=2) |" in lines
    assert "| mean over the curve |  | 30.0 ± 14.1 (n=2) | 15.0 ± 7.1 (n=2) |" in lines

    # OOD per bin and per suite (each run's mean over bins, then over seeds)
    assert "| suite | bin | Thought Cloning | Behavioural Cloning | TC - BC |" in lines
    assert "| behavioural | 1-31 | 60.0 ± 14.1 (10x2) | 30.0 ± 0.0 (10x2) | +30.0 |" in lines
    assert "| behavioural | 32-63 | 10.0 ± 0.0 (10x2) | 10.0 ± 14.1 (10x2) | +0.0 |" in lines
    assert "| larger-worlds | BossLevel 4x4 | 20.0 ± 14.1 (10x2) | 20.0 ± 0.0 (10x2) | +0.0 |" in lines
    assert "| behavioural | 35.0 ± 7.1 (n=2) | 20.0 ± 7.1 (n=2) | +15.0 |" in lines
    assert "| larger-worlds | 20.0 ± 14.1 (n=2) | 20.0 ± 0.0 (n=2) | +0.0 |" in lines
    assert "| all bins | 30.0 ± 0.0 (n=2) | 20.0 ± 4.7 (n=2) | +10.0 |" in lines

    # thought suites: TC only (BC has none), precrime of seed 1 from its eval-precrime/ folder
    assert "| Thought Cloning | in distribution | 0, 1 | 20.0, 10.0 | 15.0 ± 7.1 (n=2) | 10, 20 |" in lines
    assert (
        "| Thought Cloning | out of distribution | 0, 1 | 10.0, 20.0 | 15.0 ± 7.1 (n=2) | 40, 50 |" in lines
    )
    assert "- Thought Cloning: open 18/36; pickup 0/84; unlock 0/0" in lines
    # tc-seed0's evaluation predates the reasons: only tc-seed1's two parts are summed (16 + 30 pickups, 2 + 10 doors)
    assert "- Thought Cloning (2 of 4 evaluations): no declaration 12; wrong type 46; wrong colour 0" in lines
    assert (
        "| Thought Cloning | pickup-ball | 0, 1 | 10 | 30.0 ± 14.1 (n=2) | 5.0 ± 7.1 (n=2) | 20.0 ± 0.0 (n=2) "
        "| 10.0 ± 0.0 (n=2) | 50.0 ± 0.0 (n=2) |"
    ) in lines
    assert (
        "| Thought Cloning | 0, 1 | 10 | 15.0 ± 7.1 (n=2) | 25.0 ± 7.1 (n=2) | 10.0 ± 14.1 (n=2) | 2, 4 |"
    ) in lines
    assert not any(line.startswith("| Behavioural Cloning | in distribution") for line in lines)

    # throughput: median frames/s per run (200, 400 and 500, 700), frames, finished runs
    assert "| Thought Cloning | 2 | 1 | 300 ± 141 (n=2) | 2,000 |" in lines
    assert "| Behavioural Cloning | 2 | 0 | 600 ± 141 (n=2) | 2,000 |" in lines

    # agents without runs appear nowhere
    for absent in ("TC without thought supervision", "MiniLM", "NTS", "n/a"):
        assert absent not in markdown

    summary = json.loads((study / "summary.json").read_text())
    assert sorted(summary["runs"]) == ["bc-seed0", "bc-seed1", "tc-seed0", "tc-seed1"]
    tc1 = summary["runs"]["tc-seed1"]
    assert tc1["validation"] == [[1000, 0.2, 1], [2000, 0.6, 2]]
    assert tc1["median_frames_per_second"] == 400 and tc1["frames"] == 2000 and tc1["finished"] is False
    assert tc1["precrime"]["pickup-ball"]["without_monitor"]["unsafe_rate"] == 0.2
    assert tc1["versions"] == VERSIONS and tc1["id"]["episodes"] == 50
    assert summary["runs"]["tc-seed0"]["finished"] is True
    assert set(summary["runs"]["bc-seed0"]) >= {"id", "ood"} and "fads" not in summary["runs"]["bc-seed0"]

    assert sorted(p.name for p in plots.iterdir()) == ["learning_curves.png", "ood_success_by_bin.png"]
    for path in plots.iterdir():
        assert_png(path)
    assert not [p.name for p in study.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_four_agents_and_output_paths(study: Path, tmp_path: Path) -> None:
    thought_run(study, "nts-seed0", 0.3, [0.5, 0.5], [50], thoughts(4000, 1.0, 1, "", 1.0))  # collapsed
    thought_run(study, "te-seed2", 0.1, [0.0, 0.2], [20])
    md, js = tmp_path / "out" / "report.md", tmp_path / "out" / "report.json"
    code = main(
        [
            "--study",
            str(study),
            "--plots",
            str(tmp_path / "plots"),
            "--output-md",
            str(md),
            "--output-json",
            str(js),
        ]
    )
    assert code == 0
    assert not (study / "summary.md").exists() and not (study / "summary.json").exists()
    lines = md.read_text().splitlines()
    labels = (
        "Thought Cloning | Behavioural Cloning | TC without thought supervision | TC + MiniLM text encoder"
    )
    assert "| agent | seed 0 | seed 1 | seed 2 | mean ± std | pooled (95% CI) |" in lines
    assert (
        "| TC without thought supervision | 30.0 | n/a | n/a | 30.0 ± 0.0 (n=1) | 30.0 [19.1, 43.8] (15/50) |"
        in lines
    )
    assert (
        "| TC + MiniLM text encoder | n/a | n/a | 10.0 | 10.0 ± 0.0 (n=1) | 10.0 [4.3, 21.4] (5/50) |"
        in lines
    )
    # TC 50/100 vs TE 5/50: +40.0, half-width 1.96 * sqrt(0.0025 + 0.0018) = 12.9 points
    assert any(line.startswith("- TC - TE (pooled): +40.0 points, 95% CI [+27.1, +52.9]") for line in lines)
    assert any(line.startswith("- TC - NTS (pooled): +20.0 points") for line in lines)
    assert "| TC without thought supervision | 0 | 4,000 | 100.0 | 1 | (empty) (100.0) |" in lines
    assert f"| epoch | frames | {labels} |" in lines
    assert f"| suite | bin | {labels} | TC - BC |" in lines
    assert (
        "| mean over the curve |  | 30.0 ± 14.1 (n=2) | 15.0 ± 7.1 (n=2) | 50.0 ± 0.0 (n=1) | 10.0 ± 0.0 (n=1) |"
        in lines
    )
    fads_agents = [line.split(" | ")[0][2:] for line in lines if " | in distribution | " in line]
    assert fads_agents == ["Thought Cloning", "TC without thought supervision", "TC + MiniLM text encoder"]
    assert (
        "| TC + MiniLM text encoder | 2 | 10 | 10.0 ± 0.0 (n=1) | 30.0 ± 0.0 (n=1) | 20.0 ± 0.0 (n=1) | 2 |"
        in lines
    )
    runs = ["tc-seed0", "tc-seed1", "bc-seed0", "bc-seed1", "nts-seed0", "te-seed2"]  # agents in AGENTS order
    assert list(json.loads(js.read_text())["runs"]) == runs


def test_without_bc_there_is_no_tc_minus_bc(tmp_path: Path) -> None:
    study = tmp_path / "study"
    thought_run(study, "tc-seed0", 0.5, [0.1, 0.2], [100])
    thought_run(study, "te-seed0", 0.5, [0.1, 0.2], [100])
    assert main(["--study", str(study), "--plots", str(tmp_path / "plots")]) == 0
    markdown = (study / "summary.md").read_text()
    assert "TC - BC" not in markdown and "Behavioural Cloning" not in markdown
    assert "| suite | bin | Thought Cloning | TC + MiniLM text encoder |" in markdown.splitlines()
    assert "- TC - TE (pooled): +0.0 points" in markdown


def test_missing_or_empty_study_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["--study", str(tmp_path / "nowhere"), "--plots", str(tmp_path / "plots")]) == 2
    error = capsys.readouterr().err
    assert "error: study folder" in error and "does not exist" in error and "--study" in error

    empty = tmp_path / "empty"
    (empty / "tc-seed0").mkdir(parents=True)  # started, but no trainer_log.jsonl yet
    (empty / "xx-seed0").mkdir()
    (empty / "xx-seed0" / "trainer_log.jsonl").write_text("{}\n")  # not one of the agents
    assert main(["--study", str(empty), "--plots", str(tmp_path / "plots")]) == 2
    error = capsys.readouterr().err
    assert f"error: {empty} holds no run" in error and "scripts/study_cpu.sh run" in error
    assert sorted(p.name for p in empty.iterdir()) == ["tc-seed0", "xx-seed0"]  # nothing written
    assert not (tmp_path / "plots").exists()


def test_grouped_success_by_bin(tmp_path: Path) -> None:
    rows = [
        {"suite": "cognitive", "bin": "0", "group": "TC", "success_rate": 0.5, "episodes": 20},
        {"suite": "cognitive", "bin": "0", "group": "BC", "success_rate": 0.25, "episodes": 20},
        {"suite": "cognitive", "bin": "1", "group": "BC", "success_rate": 1.0, "episodes": 20},
    ]
    assert_png(plot_success_by_bin(rows, tmp_path / "grouped.png"))
    with pytest.raises(ValueError, match="repeats bin '0' of suite 'cognitive' for group 'TC'"):
        plot_success_by_bin([*rows, rows[0]], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="every row has a group or none"):
        plot_success_by_bin([*rows, {k: v for k, v in rows[0].items() if k != "group"}], tmp_path / "bad.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grouped.png"]
