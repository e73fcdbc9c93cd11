"""``evaluation.json``: its format, mapping it to model-card results (``model-index``), and writing output
folders whole (``build_folder``)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from dataset_builder.files import TMP_MARKER

__all__ = [
    "EVALUATION_FORMAT",
    "EVALUATION_FILE",
    "build_folder",
    "evaluation_results",
    "holds_record",
    "is_evaluation_folder",
    "level_name",
    "measurement",
    "not_a_folder",
]

EVALUATION_FORMAT = "hf-thought-cloning/evaluation"
EVALUATION_FILE = "evaluation.json"
TASK_TYPE = "reinforcement-learning"


def holds_record(folder: Path, name: str, record_format: str) -> bool:
    """Whether ``folder/name`` is a JSON object with ``"format": record_format``: how this project's tools
    recognise the folders they wrote (and so may replace)."""
    try:
        record = json.loads((Path(folder) / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("format") == record_format


def is_evaluation_folder(folder: Path) -> bool:
    """Whether ``folder`` holds the ``evaluation.json`` of a ``python -m hf_thought_cloning.evaluate`` run."""
    return holds_record(folder, EVALUATION_FILE, EVALUATION_FORMAT)


def not_a_folder(path: Path) -> str | None:
    """Why ``path`` cannot be (or become) a folder: "is a file", "lies under the file ..."; None when it can."""
    path = Path(path)
    existing = next((folder for folder in (path, *path.parents) if folder.exists()), None)
    if existing is None or existing.is_dir():
        return None
    return "is a file" if existing == path else f"lies under the file {existing}"


@contextlib.contextmanager
def build_folder(target: Path) -> Iterator[Path]:
    """An empty folder beside ``target`` to fill; when the block completes, it replaces ``target`` whole.

    The old ``target`` (if any) is renamed aside first and deleted only once the new folder is in place, so
    ``target`` never holds a mix of old and new files, and a failure (Ctrl-C included) leaves it as it was
    and nothing of the new one behind. Callers decide beforehand whether ``target`` may be replaced.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}{TMP_MARKER}", dir=target.parent))
    try:
        folder = staging / target.name
        folder.mkdir()
        yield folder
        previous = staging / "previous"
        if target.exists():
            os.replace(target, previous)
        try:
            os.replace(folder, target)
        except BaseException:
            if previous.exists():
                os.replace(previous, target)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def level_name(level: str) -> str:
    """``BabyAI-MiniBossLevel-v0`` -> ``BabyAI MiniBossLevel`` (the card's human-readable dataset name)."""
    name = level.removeprefix("BabyAI-")
    name = name.rsplit("-v", 1)[0] if name.rsplit("-v", 1)[-1].isdigit() else name
    return f"BabyAI {name}"


def measurement(episodes: int | None, max_steps: int | None) -> dict:
    """A result's ``metric_args``: how many episodes it was measured on and, for a quick look made with
    ``--max-steps``, the step cap (absent: each level's own step limit)."""
    args = {} if episodes is None else {"episodes": int(episodes)}
    return args if max_steps is None else {**args, "max_steps": int(max_steps)}


def _result(level: str, name: str, metric_type: str, metric_name: str, value: float, args: dict) -> dict:
    result = {
        "task_type": TASK_TYPE,
        "dataset_type": level,
        "dataset_name": name,
        "metric_type": metric_type,
        "metric_name": metric_name,
        "metric_value": float(value),
    }
    return {**result, "metric_args": args} if args else result


def evaluation_results(evaluation: dict) -> list[dict]:
    """The model-card result entries of an ``evaluation.json`` (metrics that were measured, None skipped).

    Each carries in ``metric_args`` the number of episodes it was measured on and the step cap of a
    ``--max-steps`` quick look, so that neither passes for a full evaluation in the card.
    """
    results: list[dict] = []
    suites = evaluation.get("suites", {})
    level = evaluation["level"]
    cap = evaluation.get("options", {}).get("max_steps")
    held_out = f"{level_name(level)} (held-out seeds)"
    if "in-distribution" in suites:
        part = suites["in-distribution"]
        args = measurement(part.get("episodes"), cap)
        results.append(_result(level, held_out, "success_rate", "Success rate", part["success_rate"], args))
        results.append(
            _result(level, held_out, "mean_episode_length", "Mean episode length", part["mean_length"], args)
        )
    for suite, part in suites.get("ood", {}).items():
        for bin_name, summary in part["bins"].items():
            levels = summary["levels"]
            results.append(
                _result(
                    levels[0] if len(levels) == 1 else ",".join(levels),
                    f"{' / '.join(level_name(name) for name in levels)}, {suite} bin {bin_name} (zero-shot)",
                    "success_rate",
                    f"Success rate ({suite} {bin_name})",
                    summary["success_rate"],
                    measurement(summary.get("episodes"), cap),
                )
            )
    for where, part in suites.get("fads", {}).items():
        if not isinstance(part, dict) or part.get("overall", {}).get("score") is None:
            continue
        label = "held-out seeds" if where == "in_distribution" else "out-of-distribution suites"
        levels = part.get("levels", [level])
        results.append(
            _result(
                ",".join(levels),
                f"{' / '.join(level_name(name) for name in levels)} ({label})",
                "fads",
                f"Future Action Declaration Score ({label})",
                part["overall"]["score"],
                measurement(part.get("episodes"), cap),
            )
        )
    for behaviour, part in suites.get("precrime", {}).items():
        name = f"{level_name(part['level'])} (missions leading to {part['description']})"
        for run, label in (("without_monitor", "without monitor"), ("with_monitor", "with precrime monitor")):
            results.append(
                _result(
                    part["level"],
                    name,
                    "unsafe_rate",
                    f"Unsafe rate {label} ({behaviour})",
                    part[run]["unsafe_rate"],
                    measurement(part[run].get("episodes"), cap),
                )
            )
    if "steering" in suites:
        part = suites["steering"]
        for run, label in (("own", "own thoughts"), ("oracle", "oracle thoughts")):
            results.append(
                _result(
                    level,
                    f"{held_out}, {label}",
                    "success_rate",
                    f"Success rate ({label})",
                    part[run]["success_rate"],
                    measurement(part[run].get("episodes"), cap),
                )
            )
    return results
