"""Tables and plots of a multi-seed study: ``python -m hf_thought_cloning.evaluation.study_report``.

    python -m hf_thought_cloning.evaluation.study_report --study DIR [--plots DIR] \\
        [--output-md FILE] [--output-json FILE]

A study folder (``scripts/study_cpu.sh``) holds one sub-folder per training run, ``<agent>-seed<k>``, with
``trainer_log.jsonl``, ``training_args.json``, ``model/`` once finished, and the evaluations
``eval-id/evaluation.json`` (suite ``in-distribution``) and ``eval-ood/evaluation.json`` (suite ``ood``,
plus ``fads``, ``precrime`` and ``steering`` for agents with thoughts; ``eval-precrime/`` and
``eval-steering/``, where those suites ran separately, replace the ``eval-ood`` numbers). Agents: ``tc``, ``bc``, ``nts``, ``te``
(``AGENTS``); an agent without runs is left out of every table.

Writes ``summary.md`` (markdown tables: in-distribution success with pooled Wilson intervals, validation
curves, zero-shot OOD per bin and per suite, the thought suites, throughput), ``summary.json`` (one record
per run) and two plots, ``learning_curves.png`` and ``ood_success_by_bin.png``; every file is written to a
temporary name and renamed. A missing study folder, or one without runs, prints ``error: ...`` and exits
with status 2.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dataset_builder.files import atomic_write_json, atomic_write_text
from hf_thought_cloning.evaluation.replays import plot_learning_curves, plot_success_by_bin

__all__ = ["AGENTS", "StudyReportArguments", "load_runs", "main", "render_tables", "write_plots"]

AGENTS = {
    "tc": "Thought Cloning",
    "bc": "Behavioural Cloning",
    "nts": "TC without thought supervision",
    "te": "TC + MiniLM text encoder",
}
RUN_FOLDER = re.compile(r"^(?P<agent>[a-z]+)-seed(?P<seed>\d+)$")
FADS_PARTS = ("in_distribution", "out_of_distribution")
Z95 = 1.959963984540054  # two-sided 95% normal quantile

Runs = dict[str, dict[int, dict]]  # agent -> seed -> run record (agents in AGENTS order, seeds sorted)


class UsageError(Exception):
    """Bad input: reported as ``error: ...`` with exit status 2."""


@dataclass
class StudyReportArguments:
    study: str = field(metadata={"help": "study folder holding <agent>-seed<k>/ run folders"})
    plots: str = field(default="docs/results", metadata={"help": "folder for the PNG plots"})
    output_md: str | None = field(
        default=None, metadata={"help": "markdown tables; not given: STUDY/summary.md"}
    )
    output_json: str | None = field(
        default=None, metadata={"help": "per-run records; not given: STUDY/summary.json"}
    )


# ------------------------------------------------------------------------------------------ loading
def _load_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _read_log(path: Path) -> list[dict]:
    """The lines of ``trainer_log.jsonl``; a line cut short (a run still writing) is skipped."""
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries


def load_run(folder: Path) -> dict:
    """One run's record: validation points ``[frames, success, epoch]``, throughput, evaluations."""
    log = _read_log(folder / "trainer_log.jsonl")
    fps = [entry["train/frames_per_second"] for entry in log if "train/frames_per_second" in entry]
    training_args = _load_json(folder / "training_args.json") or {}
    record: dict = {
        "validation": [
            [entry["train/frames"], entry["validation/success_rate"], entry["train/epoch"]]
            for entry in log
            if "validation/success_rate" in entry
        ],
        "validation_episodes": training_args.get("validation_episodes"),
        "median_frames_per_second": statistics.median(fps) if fps else None,
        "frames": max((entry.get("train/frames", 0) for entry in log), default=0),
        "finished": (folder / "model").is_dir(),
    }
    in_distribution = _load_json(folder / "eval-id" / "evaluation.json")
    ood = _load_json(folder / "eval-ood" / "evaluation.json")
    if in_distribution:
        record["id"] = in_distribution["suites"]["in-distribution"]
    if ood:
        record["ood"] = ood["suites"].get("ood")
        record.update(
            {key: ood["suites"][key] for key in ("fads", "precrime", "steering") if key in ood["suites"]}
        )
    # A separate call (--suite precrime / steering), made on purpose (usually with more episodes than the
    # `--suite all` of eval-ood), replaces that call's numbers.
    for key in ("precrime", "steering"):
        extra = _load_json(folder / f"eval-{key}" / "evaluation.json")
        if extra and key in extra["suites"]:
            record[key] = extra["suites"][key]
    versions = (in_distribution or ood or {}).get("versions")
    if versions:
        record["versions"] = versions
    return record


def load_runs(study: Path) -> Runs:
    """Every ``<agent>-seed<k>`` folder of a known agent with a ``trainer_log.jsonl``."""
    found: dict[str, dict[int, Path]] = {}
    for folder in study.iterdir():
        match = RUN_FOLDER.match(folder.name)
        if match and match["agent"] in AGENTS and (folder / "trainer_log.jsonl").is_file():
            found.setdefault(match["agent"], {})[int(match["seed"])] = folder
    return {
        agent: {seed: load_run(found[agent][seed]) for seed in sorted(found[agent])}
        for agent in AGENTS
        if agent in found
    }


def _with(runs: Runs, key: str) -> Runs:
    """The runs whose record has ``key``, agents without any left out."""
    kept = {agent: {seed: r for seed, r in seeds.items() if r.get(key)} for agent, seeds in runs.items()}
    return {agent: seeds for agent, seeds in kept.items() if seeds}


# ------------------------------------------------------------------------------------------ statistics
def mean_std(values: Iterable[float | None]) -> tuple[float, float, int] | None:
    """Mean, sample standard deviation (0 for one value) and count of the values that are not None."""
    kept = [value for value in values if value is not None]
    if not kept:
        return None
    return statistics.mean(kept), statistics.stdev(kept) if len(kept) > 1 else 0.0, len(kept)


def fmt(values: Iterable[float | None], scale: float = 100.0, count: str | None = None) -> str:
    """``mean ± std (n=k)`` scaled (percent by default), or ``n/a``; ``count`` replaces ``n=k``."""
    stats = mean_std(values)
    if stats is None:
        return "n/a"
    mean, std, n = stats
    return f"{scale * mean:.1f} ± {scale * std:.1f} ({count or f'n={n}'})"


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_ci(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float, float]:
    """``p1 - p2`` with its normal-approximation (Wald) interval."""
    p1, p2 = k1 / n1, k2 / n2
    half = z * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    return p1 - p2, p1 - p2 - half, p1 - p2 + half


def pooled(records: Iterable[dict]) -> tuple[int, int]:
    """Successes and episodes of several evaluations of one suite, pooled."""
    results = list(records)
    return (
        sum(round(result["success_rate"] * result["episodes"]) for result in results),
        sum(result["episodes"] for result in results),
    )


# ------------------------------------------------------------------------------------------ tables
def _row(cells: Iterable[object]) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _header(*names: str) -> list[str]:
    return [_row(names), "|" + "---|" * len(names)]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def in_distribution_table(runs: Runs) -> list[str]:
    """Success on the held-out test seeds per seed, mean ± std, pooled with a Wilson interval; vs TC."""
    runs = _with(runs, "id")
    if not runs:
        return []
    seeds = sorted({seed for per_seed in runs.values() for seed in per_seed})
    lines = [
        "### In-distribution success (held-out test seeds of the dataset; %)",
        "",
        *_header("agent", *(f"seed {seed}" for seed in seeds), "mean ± std", "pooled (95% CI)"),
    ]
    counts = {}
    for agent, per_seed in runs.items():
        rates = [per_seed[seed]["id"]["success_rate"] if seed in per_seed else None for seed in seeds]
        k, n = counts[agent] = pooled(r["id"] for r in per_seed.values())
        low, high = wilson(k, n)
        cell = f"{100 * k / n:.1f} [{100 * low:.1f}, {100 * high:.1f}] ({k}/{n})"
        lines.append(_row([AGENTS[agent], *map(_pct, rates), fmt(rates), cell]))
    lines.append("")
    if "tc" in counts:
        k_tc, n_tc = counts["tc"]
        for agent, (k, n) in counts.items():
            if agent == "tc":
                continue
            difference, low, high = difference_ci(k_tc, n_tc, k, n)
            lines.append(
                f"- TC - {agent.upper()} (pooled): {100 * difference:+.1f} points, 95% CI "
                f"[{100 * low:+.1f}, {100 * high:+.1f}] (normal approximation; TC {k_tc}/{n_tc}, "
                f"{agent.upper()} {k}/{n} successful episodes)"
            )
        lines.append("")
    return lines


def _curves(runs: Runs) -> dict[str, dict[float, list[tuple[float, float]]]]:
    """agent -> epoch -> [(frames, success) per seed]."""
    curves: dict[str, dict[float, list[tuple[float, float]]]] = {}
    for agent, per_seed in runs.items():
        for record in per_seed.values():
            for frames, success, epoch in record["validation"]:
                curves.setdefault(agent, {}).setdefault(round(float(epoch), 6), []).append((frames, success))
    return curves


def validation_table(runs: Runs) -> list[str]:
    """Validation success per epoch and agent, and each run's mean over its curve (learning speed)."""
    curves = _curves(runs)
    if not curves:
        return []
    sizes = sorted(
        {r["validation_episodes"] for s in runs.values() for r in s.values() if r["validation_episodes"]}
    )
    per_point = f" ({'/'.join(map(str, sizes))} validation-split episodes per point)" if sizes else ""
    agents = list(runs)
    lines = [
        f"### Validation success during training{per_point}",
        "",
        "Success %, mean ± std over seeds; the last row averages each run's points (the area under its",
        "curve per point: higher means it learnt sooner), then over seeds.",
        "",
        *_header("epoch", "frames", *(AGENTS[agent] for agent in agents)),
    ]
    for epoch in sorted({epoch for points in curves.values() for epoch in points}):
        points = [curves.get(agent, {}).get(epoch, []) for agent in agents]
        frames = statistics.mean(f for per_agent in points for f, _ in per_agent)
        cells = [fmt(success for _, success in per_agent) for per_agent in points]
        lines.append(_row([f"{epoch:g}", f"{frames:,.0f}", *cells]))
    means = [
        fmt(statistics.mean(p[1] for p in r["validation"]) for r in runs[agent].values() if r["validation"])
        for agent in agents
    ]
    lines += [_row(["mean over the curve", "", *means]), ""]
    return lines


def _ood_results(runs: Runs) -> dict[tuple[str, str], dict[str, dict[int, dict]]]:
    """(suite, bin) -> agent -> seed -> bin result, in the order the bins first appear."""
    table: dict[tuple[str, str], dict[str, dict[int, dict]]] = {}
    for agent, per_seed in _with(runs, "ood").items():
        for seed, record in per_seed.items():
            for suite, content in record["ood"].items():
                for name, result in content["bins"].items():
                    table.setdefault((suite, name), {}).setdefault(agent, {})[seed] = result
    return table


def _tc_minus_bc(values: dict[str, list[float]]) -> list[str]:
    """The "TC - BC" cell (difference of the means over seeds), or no cell without both agents."""
    if "tc" not in values or "bc" not in values:
        return []
    if not values["tc"] or not values["bc"]:
        return ["n/a"]
    return [f"{100 * (statistics.mean(values['tc']) - statistics.mean(values['bc'])):+.1f}"]


def ood_tables(runs: Runs) -> list[str]:
    """Zero-shot success per (suite, bin) and per suite, agents side by side."""
    table = _ood_results(runs)
    if not table:
        return []
    agents = list(runs)
    difference = ["TC - BC"] if "tc" in agents and "bc" in agents else []
    lines = [
        "### Zero-shot out of distribution (success %, mean ± std over seeds; episodes per run x seeds)",
        "",
        *_header("suite", "bin", *(AGENTS[agent] for agent in agents), *difference),
    ]
    for (suite, name), per_agent in table.items():
        values, cells = {}, []
        for agent in agents:
            results = list(per_agent.get(agent, {}).values())
            values[agent] = [result["success_rate"] for result in results]
            episodes = "/".join(str(e) for e in sorted({result["episodes"] for result in results}))
            cells.append(fmt(values[agent], count=f"{episodes}x{len(results)}"))
        lines.append(_row([suite, name, *cells, *_tc_minus_bc(values)]))
    lines += [
        "",
        "### Zero-shot out of distribution per suite (success %, each run's mean over the bins, then mean ± std over seeds)",
        "",
        *_header("suite", *(AGENTS[agent] for agent in agents), *difference),
    ]
    suites = list(dict.fromkeys(suite for suite, _ in table))
    for suite in [*suites, None]:  # None: all bins of all suites
        values = {}
        for agent in agents:
            per_seed: dict[int, list[float]] = {}
            for (bin_suite, _), per_agent in table.items():
                if suite in (None, bin_suite):
                    for seed, result in per_agent.get(agent, {}).items():
                        per_seed.setdefault(seed, []).append(result["success_rate"])
            values[agent] = [statistics.mean(rates) for rates in per_seed.values()]
        cells = [fmt(values[agent]) for agent in agents]
        lines.append(_row([suite or "all bins", *cells, *_tc_minus_bc(values)]))
    lines.append("")
    return lines


def thoughts_table(runs: Runs) -> list[str]:
    """What each run with thoughts thought on its held-out test episodes: empty thoughts (a collapsed upper
    level writes only those), distinct thoughts and the most frequent one. Evaluations made before these
    statistics existed have none and are left out."""
    rows = [
        (agent, seed, record["id"]["thoughts"])
        for agent, per_seed in _with(runs, "id").items()
        for seed, record in per_seed.items()
        if record["id"].get("thoughts")
    ]
    if not rows:
        return []
    lines = [
        "### What the agents thought (executed steps of the held-out test episodes)",
        "",
        *_header("agent", "seed", "steps", "empty thoughts (%)", "distinct thoughts", "most frequent (% of steps)"),
    ]
    for agent, seed, thoughts in rows:
        top = thoughts["most_frequent"][0]
        shown = f"`{top['thought']}`" if top["thought"] else "(empty)"
        lines.append(_row([
            AGENTS[agent], seed, f"{thoughts['steps']:,}", _pct(thoughts["empty_share"]), f"{thoughts['distinct']:,}",
            f"{shown} ({_pct(top['share'])})",
        ]))  # fmt: skip
    lines.append("")
    return lines


def _seed_values(values: list[float | None], scale: float = 100.0) -> str:
    return ", ".join("n/a" if value is None else f"{scale * value:.1f}" for value in values)


def fads_table(runs: Runs) -> list[str]:
    """FADS in and out of distribution per agent with thoughts, and declared/performed per kind."""
    runs = _with(runs, "fads")
    if not runs:
        return []
    lines = [
        "### FADS: share of performed interactions declared by the same step's own thought",
        "",
        *_header("agent", "episodes", "seeds", "per seed (%)", "mean ± std", "interactions per seed"),
    ]
    kinds_lines, reason_lines = [], []
    for agent, per_seed in runs.items():
        seeds = ", ".join(map(str, per_seed))
        for part in FADS_PARTS:
            overall = [r["fads"][part]["overall"] for r in per_seed.values()]
            scores = [o["score"] for o in overall]
            counts = ", ".join(str(o["actions"]) for o in overall)
            lines.append(
                _row(
                    [AGENTS[agent], part.replace("_", " "), seeds, _seed_values(scores), fmt(scores), counts]
                )
            )
        per_kind = [r["fads"][part]["per_kind"] for r in per_seed.values() for part in FADS_PARTS]
        kinds = sorted({kind for kinds in per_kind for kind in kinds})
        summed = [
            f"{kind} {sum(k.get(kind, {}).get('declared', 0) for k in per_kind)}"
            f"/{sum(k.get(kind, {}).get('actions', 0) for k in per_kind)}"
            for kind in kinds
        ]
        kinds_lines.append(f"- {AGENTS[agent]}: " + "; ".join(summed))
        # Evaluations made before the breakdown existed have no "undeclared" entry; they are left out of it.
        reasons = [r["fads"][part]["undeclared"]["overall"] for r in per_seed.values() for part in FADS_PARTS
                   if "undeclared" in r["fads"][part]]  # fmt: skip
        if reasons:
            totals = {reason: sum(counts.get(reason, 0) for counts in reasons) for reason in reasons[0]}
            reason_lines.append(
                f"- {AGENTS[agent]} ({len(reasons)} of {len(per_seed) * len(FADS_PARTS)} evaluations): "
                + "; ".join(f"{reason.replace('_', ' ')} {count}" for reason, count in totals.items())
            )
    lines += [
        "",
        "FADS per kind (declared/performed, in + out of distribution, summed over seeds):",
        "",
        *kinds_lines,
        "",
    ]
    if reason_lines:
        lines += [
            "Undeclared interactions by what the same step's thought declared instead (in + out of distribution,"
            " summed over seeds):",
            "",
            *reason_lines,
            "",
        ]
    return lines


def precrime_table(runs: Runs) -> list[str]:
    """Unsafe-event, success and halt rates without / with the thought monitor, per agent and behaviour."""
    runs = _with(runs, "precrime")
    if not runs:
        return []
    lines = [
        "### Precrime: unsafe-event rate and success without / with the thought monitor (%, mean ± std over seeds)",
        "",
        *_header(
            "agent", "behaviour", "seeds", "episodes/seed", "unsafe without", "unsafe with",
            "success without", "success with", "halted with",
        ),
    ]  # fmt: skip
    columns = [
        ("without_monitor", "unsafe_rate"), ("with_monitor", "unsafe_rate"), ("without_monitor", "success_rate"),
        ("with_monitor", "success_rate"), ("with_monitor", "halted_rate"),
    ]  # fmt: skip
    for agent, per_seed in runs.items():
        behaviours = list(dict.fromkeys(b for r in per_seed.values() for b in r["precrime"]))
        for behaviour in behaviours:
            seeds = [seed for seed, r in per_seed.items() if behaviour in r["precrime"]]
            results = [per_seed[seed]["precrime"][behaviour] for seed in seeds]
            episodes = "/".join(str(e) for e in sorted({r["without_monitor"]["episodes"] for r in results}))
            cells = [fmt(r[monitor][key] for r in results) for monitor, key in columns]
            lines.append(_row([AGENTS[agent], behaviour, ", ".join(map(str, seeds)), episodes, *cells]))
    lines.append("")
    return lines


def steering_table(runs: Runs) -> list[str]:
    """Success with the agent's own thoughts vs oracle thoughts on the in-distribution test seeds."""
    runs = _with(runs, "steering")
    if not runs:
        return []
    lines = [
        "### Steering with oracle thoughts (in-distribution test seeds; %, mean ± std over seeds)",
        "",
        *_header(
            "agent", "seeds", "episodes/seed", "own thoughts", "oracle thoughts", "oracle - own",
            "oracle gave up (episodes, per seed)",
        ),
    ]  # fmt: skip
    for agent, per_seed in runs.items():
        results = [r["steering"] for r in per_seed.values()]
        lines.append(_row([
            AGENTS[agent], ", ".join(map(str, per_seed)),
            "/".join(str(e) for e in sorted({r["own"]["episodes"] for r in results})),
            fmt(r["own"]["success_rate"] for r in results), fmt(r["oracle"]["success_rate"] for r in results),
            fmt(r["oracle_minus_own"] for r in results),
            ", ".join(str(r["oracle"].get("oracle_gave_up", "n/a")) for r in results),
        ]))  # fmt: skip
    lines.append("")
    return lines


def throughput_table(runs: Runs) -> list[str]:
    """Training speed and progress per agent."""
    lines = [
        "### Throughput (training)",
        "",
        *_header(
            "agent", "runs", "finished", "median frames/s (mean ± std over runs)", "frames trained per run"
        ),
    ]
    for agent, per_seed in runs.items():
        records = list(per_seed.values())
        speed = mean_std(r["median_frames_per_second"] for r in records)
        frames = sorted({r["frames"] for r in records})
        lines.append(_row([
            AGENTS[agent], len(records), sum(r["finished"] for r in records),
            "n/a" if speed is None else f"{speed[0]:.0f} ± {speed[1]:.0f} (n={speed[2]})",
            f"{frames[0]:,}" if len(frames) == 1 else f"{frames[0]:,} to {frames[-1]:,}",
        ]))  # fmt: skip
    lines.append("")
    return lines


def versions_line(runs: Runs) -> list[str]:
    """The software versions the evaluations ran with (one line per distinct set)."""
    described = {
        ", ".join(f"{package} {version}" for package, version in sorted(r["versions"].items()))
        for per_seed in runs.values()
        for r in per_seed.values()
        if "versions" in r
    }
    return [f"Evaluated with: {line}" for line in sorted(described)] + ([""] if described else [])


def render_tables(runs: Runs) -> list[str]:
    """Every table of the study, as markdown lines."""
    return [
        *in_distribution_table(runs), *thoughts_table(runs), *validation_table(runs), *ood_tables(runs), *fads_table(runs),
        *precrime_table(runs), *steering_table(runs), *throughput_table(runs), *versions_line(runs),
    ]  # fmt: skip


# ------------------------------------------------------------------------------------------ plots
def write_plots(runs: Runs, folder: Path) -> list[Path]:
    """``learning_curves.png`` and ``ood_success_by_bin.png`` (each only when there is data for it)."""
    written = []
    curves = {
        AGENTS[agent]: [
            (statistics.mean(f for f, _ in points), *mean_std(s for _, s in points)[:2])
            for _, points in sorted(by_epoch.items())
        ]
        for agent, by_epoch in _curves(runs).items()
    }
    if curves:
        written.append(plot_learning_curves(
            curves, folder / "learning_curves.png", title="Validation success (mean ± std over seeds)"
        ))  # fmt: skip
    rows = []
    for (suite, name), per_agent in _ood_results(runs).items():
        for agent, per_seed in per_agent.items():
            results = list(per_seed.values())
            rows.append({
                "suite": suite, "bin": name, "group": AGENTS[agent],
                "success_rate": statistics.mean(r["success_rate"] for r in results),
                "episodes": sum(r["episodes"] for r in results),
            })  # fmt: skip
    if rows:
        written.append(plot_success_by_bin(
            rows, folder / "ood_success_by_bin.png",
            title="Zero-shot OOD success per bin (mean over seeds; n = episodes over all seeds)",
        ))  # fmt: skip
    return written


# ------------------------------------------------------------------------------------------ command line
def parse_arguments(argv: list[str] | None) -> StudyReportArguments:
    from transformers import HfArgumentParser

    parser = HfArgumentParser(
        StudyReportArguments, prog="python -m hf_thought_cloning.evaluation.study_report"
    )
    (arguments,) = parser.parse_args_into_dataclasses(args=argv)
    return arguments


def report(arguments: StudyReportArguments) -> str:
    """Load the study, write the markdown, the JSON and the plots; returns the markdown."""
    study = Path(arguments.study)
    if not study.is_dir():
        raise UsageError(
            f"study folder {study} does not exist: give --study the folder scripts/study_cpu.sh wrote "
            "(its STUDY setting, outputs/study by default)"
        )
    runs = load_runs(study)
    if not runs:
        raise UsageError(
            f"{study} holds no run (no <agent>-seed<k>/trainer_log.jsonl with agent one of {', '.join(AGENTS)}): "
            "train first (scripts/study_cpu.sh run), or point --study at a study folder"
        )
    markdown = "\n".join(render_tables(runs)) + "\n"
    records = {
        f"{agent}-seed{seed}": record for agent, per_seed in runs.items() for seed, record in per_seed.items()
    }
    atomic_write_json(Path(arguments.output_json or study / "summary.json"), {"runs": records})
    atomic_write_text(Path(arguments.output_md or study / "summary.md"), markdown)
    write_plots(runs, Path(arguments.plots))
    return markdown


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    try:
        markdown = report(arguments)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(markdown, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
