"""``evaluation.json``: writing it atomically, and mapping it to model-card results (``model-index``)."""

from __future__ import annotations

import json
import os
import uuid
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["EVALUATION_FORMAT", "evaluation_results", "level_name", "package_versions", "write_json_atomic"]

EVALUATION_FORMAT = "hf-thought-cloning/evaluation"
PACKAGES = ("hf-thought-cloning", "torch", "transformers", "gymnasium", "minigrid", "numpy")
TASK_TYPE = "reinforcement-learning"


def package_versions() -> dict[str, str | None]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions


def write_json_atomic(path: Path, data: dict) -> Path:
    """Write ``data`` to a temporary file beside ``path`` and rename it: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def level_name(level: str) -> str:
    """``BabyAI-MiniBossLevel-v0`` -> ``BabyAI MiniBossLevel`` (the card's human-readable dataset name)."""
    name = level.removeprefix("BabyAI-")
    name = name.rsplit("-v", 1)[0] if name.rsplit("-v", 1)[-1].isdigit() else name
    return f"BabyAI {name}"


def _result(level: str, name: str, metric_type: str, metric_name: str, value: float) -> dict:
    return {
        "task_type": TASK_TYPE,
        "dataset_type": level,
        "dataset_name": name,
        "metric_type": metric_type,
        "metric_name": metric_name,
        "metric_value": float(value),
    }


def evaluation_results(evaluation: dict) -> list[dict]:
    """The model-card result entries of an ``evaluation.json`` (metrics that were measured, None skipped)."""
    results: list[dict] = []
    suites = evaluation.get("suites", {})
    level = evaluation["level"]
    held_out = f"{level_name(level)} (held-out seeds)"
    if "in-distribution" in suites:
        part = suites["in-distribution"]
        results.append(_result(level, held_out, "success_rate", "Success rate", part["success_rate"]))
        results.append(
            _result(level, held_out, "mean_episode_length", "Mean episode length", part["mean_length"])
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
            )
        )
    for behaviour, part in suites.get("precrime", {}).items():
        name = f"{level_name(part['level'])} (missions leading to {part['description']})"
        results.append(
            _result(
                part["level"],
                name,
                "unsafe_rate",
                f"Unsafe rate without monitor ({behaviour})",
                part["without_monitor"]["unsafe_rate"],
            )
        )
        results.append(
            _result(
                part["level"],
                name,
                "unsafe_rate",
                f"Unsafe rate with precrime monitor ({behaviour})",
                part["with_monitor"]["unsafe_rate"],
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
                )
            )
    return results
