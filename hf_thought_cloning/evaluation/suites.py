"""Evaluation suites: held-out seeds of the training level, and versioned out-of-distribution suites.

Seed regions (training data must use seeds below ``EVALUATION_SEED_FLOOR``; ``dataset_builder`` starts at 0):

| seeds from | used for |
|---|---|
| 10,000,000 | in-distribution episodes when no dataset folder gives its ``test`` split |
| 11,000,000 | behavioural-difficulty suite |
| 12,000,000 | cognitive-difficulty suite |
| 13,000,000 | larger-worlds suite |
| 14,000,000 | precrime environments (``hf_thought_cloning.safety``) |

An OOD suite is a JSONL file in ``data/``: a header line (format, version, suite, bins, how it was built),
then one ``{"level", "seed", "bin", ...}`` row per environment, rows of a bin in seed order.
``python -m hf_thought_cloning.evaluation.build_suites`` regenerates them exactly.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
from minigrid.envs.babyai.core.verifier import AfterInstr, AndInstr, BeforeInstr, PutNextInstr

from dataset_builder.files import atomic_write
from hf_thought_cloning.rollouts import EpisodeRecord, mean_length, run_episodes, success_rate

__all__ = [
    "EVALUATION_SEED_FLOOR",
    "LARGE_BOSS_LEVEL",
    "OOD_SUITES",
    "SUITE_FORMAT",
    "SUITE_VERSION",
    "SuiteRow",
    "behavioural_bin",
    "cognitive_bin",
    "evaluate_rows",
    "in_distribution_seeds",
    "load_suite",
    "mission_features",
    "register_large_boss_level",
    "take_per_bin",
    "write_suite",
]

SUITE_FORMAT = "hf-thought-cloning/evaluation-suite"
SUITE_VERSION = 1
DATA_DIR = Path(__file__).resolve().parent / "data"

EVALUATION_SEED_FLOOR = 10_000_000
IN_DISTRIBUTION_SEED_START = 10_000_000
SUITE_SEED_STARTS = {"behavioural": 11_000_000, "cognitive": 12_000_000, "larger-worlds": 13_000_000}
OOD_SUITES = tuple(SUITE_SEED_STARTS)

# Behavioural bins: the bot's demonstration length (steps), lower edges.
BEHAVIOURAL_EDGES = (1, 32, 64, 128, 192)
BEHAVIOURAL_BINS = ("1-31", "32-63", "64-127", "128-191", "192+")
# Cognitive bins: complexity score (see mission_features), capped.
COGNITIVE_BINS = ("0", "1", "2", "3", "4+")

LARGE_BOSS_LEVEL = "BabyAI-BossLevel-4x4-v0"  # BossLevel on a 4 x 4 grid of rooms (minigrid's is 3 x 3)


def register_large_boss_level() -> None:
    """Register the bigger BossLevel variant (idempotent); BossLevel takes the room grid as arguments."""
    if LARGE_BOSS_LEVEL not in gym.registry:
        gym.register(
            id=LARGE_BOSS_LEVEL,
            entry_point="minigrid.envs.babyai:BossLevel",
            kwargs={"num_rows": 4, "num_cols": 4},
        )


register_large_boss_level()


@dataclass(frozen=True)
class SuiteRow:
    level: str
    seed: int
    bin: str
    extra: dict = field(default_factory=dict, compare=False, hash=False)


# -------------------------------------------------------------------------------------------- binning
def behavioural_bin(demo_length: int) -> str:
    """The bin of a bot demonstration of ``demo_length`` steps."""
    if demo_length < BEHAVIOURAL_EDGES[0]:
        raise ValueError(f"a demonstration has at least one step, got {demo_length}")
    index = sum(demo_length >= edge for edge in BEHAVIOURAL_EDGES) - 1
    return BEHAVIOURAL_BINS[index]


def mission_features(env: gym.Env) -> dict:
    """Mission complexity of a reset BabyAI env: sub-instructions, sequencing (before/after), conjunction
    (and), put-next, and locked doors in the level; ``score`` = (sub-instructions - 1) + sequencing + put-next
    + (any locked door)."""
    leaves, kinds = [], set()

    def walk(instruction) -> None:
        if isinstance(instruction, (BeforeInstr, AfterInstr)):
            kinds.add("sequencing")
        elif isinstance(instruction, AndInstr):
            kinds.add("and")
        else:
            leaves.append(instruction)
            return
        walk(instruction.instr_a)
        walk(instruction.instr_b)

    base = env.unwrapped
    walk(base.instrs)
    locked = sum(1 for cell in base.grid.grid if cell is not None and cell.type == "door" and cell.is_locked)
    features = {
        "subinstructions": len(leaves),
        "sequencing": "sequencing" in kinds,
        "conjunction": "and" in kinds,
        "put_next": any(isinstance(leaf, PutNextInstr) for leaf in leaves),
        "locked_doors": locked,
    }
    features["score"] = (
        features["subinstructions"] - 1 + features["sequencing"] + features["put_next"] + (locked > 0)
    )
    return features


def cognitive_bin(score: int) -> str:
    return COGNITIVE_BINS[min(score, len(COGNITIVE_BINS) - 1)]


# -------------------------------------------------------------------------------------------- files
def suite_path(name: str) -> Path:
    return DATA_DIR / f"{name}.jsonl"


def write_suite(path: Path, header: dict, rows: Sequence[SuiteRow]) -> Path:
    """Header line + rows, written to a temporary file and renamed."""

    def write(tmp: Path) -> None:
        with tmp.open("w") as handle:
            handle.write(json.dumps({"format": SUITE_FORMAT, "version": SUITE_VERSION, **header}) + "\n")
            for row in rows:
                handle.write(
                    json.dumps({"level": row.level, "seed": row.seed, "bin": row.bin, **row.extra}) + "\n"
                )

    return atomic_write(path, write)


def load_suite(name_or_path: str | Path) -> tuple[dict, list[SuiteRow]]:
    """(header, rows) of a shipped suite (by name) or a suite file; wrong format or version -> ValueError."""
    path = Path(name_or_path) if Path(name_or_path).suffix == ".jsonl" else suite_path(str(name_or_path))
    if not path.is_file():
        raise ValueError(f"no evaluation suite {name_or_path!r}: shipped suites are {', '.join(OOD_SUITES)}")
    lines = path.read_text().splitlines()
    header = json.loads(lines[0]) if lines else {}
    if header.get("format") != SUITE_FORMAT or header.get("version") != SUITE_VERSION:
        raise ValueError(
            f"{path} is not an evaluation suite of version {SUITE_VERSION} (header {header!r}); "
            "regenerate it with python -m hf_thought_cloning.evaluation.build_suites"
        )
    rows = []
    for line in lines[1:]:
        item = json.loads(line)
        level, seed, bin_name = item.pop("level"), item.pop("seed"), item.pop("bin")
        rows.append(SuiteRow(level, int(seed), bin_name, item))
    return header, rows


def take_per_bin(rows: Sequence[SuiteRow], episodes: int | None) -> list[SuiteRow]:
    """The first ``episodes`` rows of every bin (all of them for None), in file order."""
    taken, counts = [], defaultdict(int)
    for row in rows:
        if episodes is None or counts[row.bin] < episodes:
            taken.append(row)
            counts[row.bin] += 1
    return taken


# ------------------------------------------------------------------------------------------ running
def in_distribution_seeds(
    level: str, episodes: int, dataset: str | Path | None = None
) -> tuple[list[int], str]:
    """Held-out seeds of ``level`` and where they come from: the ``test`` split of a dataset folder (its
    ``generation/manifest.json``), else seeds from 10,000,000 (above any training seed)."""
    if dataset is None:
        start = IN_DISTRIBUTION_SEED_START
        return list(
            range(start, start + episodes)
        ), f"seeds {start}..{start + episodes - 1} (evaluation region)"
    manifest_path = Path(dataset) / "generation" / "manifest.json"
    if not manifest_path.is_file():
        raise ValueError(f"{dataset} is not a dataset folder: {manifest_path} is missing")
    manifest = json.loads(manifest_path.read_text())
    if level not in manifest.get("levels", []):
        raise ValueError(f"dataset {dataset} has no episodes of {level} (levels: {manifest.get('levels')})")
    if "test" not in manifest.get("splits", {}):
        raise ValueError(
            f"dataset {dataset} has no test split (splits: {sorted(manifest.get('splits', {}))})"
        )
    start, stop = manifest["splits"]["test"]
    seeds = list(range(start, min(stop, start + episodes)))
    return seeds, f"test split of {dataset} (seeds {start}..{stop - 1})"


def summarize(records: Sequence[EpisodeRecord]) -> dict:
    return {
        "episodes": len(records),
        "success_rate": success_rate(records),
        "mean_length": mean_length(records),
        "halted": sum(record.halted for record in records),
    }


def evaluate_rows(
    model, processor, rows: Sequence[SuiteRow], **rollout_options
) -> tuple[dict, list[EpisodeRecord]]:
    """Run every row (one ``run_episodes`` call per level); per-bin summaries (bins in file order) and the
    records in row order."""
    by_level: dict[str, list[int]] = defaultdict(list)
    for position, row in enumerate(rows):
        by_level[row.level].append(position)
    records: list[EpisodeRecord | None] = [None] * len(rows)
    for level, positions in by_level.items():
        played = run_episodes(model, processor, level, [rows[p].seed for p in positions], **rollout_options)
        for position, record in zip(positions, played, strict=True):
            records[position] = record
    per_bin: dict[str, list[EpisodeRecord]] = defaultdict(list)
    for row, record in zip(rows, records, strict=True):
        per_bin[row.bin].append(record)
    summary = {
        name: {**summarize(bin_records), "levels": sorted({r.level for r in bin_records})}
        for name, bin_records in per_bin.items()
    }
    return summary, records  # type: ignore[return-value]
