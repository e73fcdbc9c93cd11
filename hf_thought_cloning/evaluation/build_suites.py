"""Regenerate the out-of-distribution suite files (``data/*.jsonl``) from their seed regions.

    python -m hf_thought_cloning.evaluation.build_suites [--per-bin 30] [--output DIR] [--suites ...]

Every candidate seed is played by the thought bot (``dataset_builder.episodes.run_episode``, no noise);
seeds the bot cannot solve are skipped, so every environment of a suite is solvable. Seeds are scanned in
order from the suite's seed start until every bin holds ``--per-bin`` rows, so the files are a pure function
of (minigrid version, per-bin count).

* behavioural: BabyAI-BossLevel-v0, bins by the bot's demonstration length (1-31, 32-63, 64-127, 128-191,
  192+ steps).
* cognitive: BabyAI-BossLevel-v0, bins by mission complexity score 0, 1, 2, 3, 4+ (see ``mission_features``).
* larger-worlds: BabyAI-BossLevel-v0 (3 x 3 rooms) and BabyAI-BossLevel-4x4-v0 (4 x 4 rooms), one bin each.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from importlib.metadata import version
from pathlib import Path

from dataset_builder.episodes import Episode, make_env, reset_quietly, run_episode
from hf_thought_cloning.evaluation.report import not_a_folder
from hf_thought_cloning.evaluation.suites import (
    BEHAVIOURAL_BINS,
    COGNITIVE_BINS,
    DATA_DIR,
    LARGE_BOSS_LEVEL,
    SUITE_SEED_STARTS,
    SuiteRow,
    behavioural_bin,
    cognitive_bin,
    mission_features,
    write_suite,
)

BOSS_LEVEL = "BabyAI-BossLevel-v0"
MAX_SCAN = 20_000


def _scan(suite: str, levels_and_bins: dict[str, tuple[str, ...]], per_bin: int, bin_of) -> list[SuiteRow]:
    """Scan seeds from the suite's start for each level; ``bin_of(env, episode)`` names a row's bin (or None)."""
    rows: list[SuiteRow] = []
    for level, bins in levels_and_bins.items():
        env = make_env(level)
        counts: dict[str, int] = defaultdict(int)
        start = SUITE_SEED_STARTS[suite]
        for seed in range(start, start + MAX_SCAN):
            if all(counts[name] >= per_bin for name in bins):
                break
            reset_quietly(env, seed)
            features = mission_features(env)
            episode = run_episode(env, level, seed)
            if not isinstance(episode, Episode):
                continue  # the bot cannot solve it: not a fair test
            name = bin_of(level, features, episode)
            if name is None or counts[name] >= per_bin:
                continue
            counts[name] += 1
            rows.append(SuiteRow(level, seed, name, {"demo_length": episode.num_steps, **features}))
        else:
            raise RuntimeError(
                f"{suite}: {dict(counts)} after {MAX_SCAN} seeds of {level}; need {per_bin} per bin"
            )
        env.close()
    order = {name: i for i, name in enumerate(name for bins in levels_and_bins.values() for name in bins)}
    return sorted(rows, key=lambda row: (order[row.bin], row.seed))


SUITES = {
    "behavioural": (
        "Zero-shot behavioural difficulty: BossLevel environments binned by the length of the bot's demonstration.",
        {BOSS_LEVEL: BEHAVIOURAL_BINS},
        lambda level, features, episode: behavioural_bin(episode.num_steps),
    ),
    "cognitive": (
        "Zero-shot cognitive difficulty: BossLevel environments binned by mission complexity score "
        "(sub-instructions - 1) + sequencing + put-next + any locked door.",
        {BOSS_LEVEL: COGNITIVE_BINS},
        lambda level, features, episode: cognitive_bin(features["score"]),
    ),
    "larger-worlds": (
        "Zero-shot larger worlds: BossLevel (3 x 3 rooms of 8 x 8) and BossLevel-4x4 (4 x 4 rooms).",
        {BOSS_LEVEL: ("BossLevel 3x3",), LARGE_BOSS_LEVEL: ("BossLevel 4x4",)},
        lambda level, features, episode: "BossLevel 3x3" if level == BOSS_LEVEL else "BossLevel 4x4",
    ),
}


def build(suite: str, per_bin: int, output: Path) -> Path:
    description, levels_and_bins, bin_of = SUITES[suite]
    rows = _scan(suite, levels_and_bins, per_bin, bin_of)
    header = {
        "suite": suite,
        "description": description,
        "bins": [name for bins in levels_and_bins.values() for name in bins],
        "levels": list(levels_and_bins),
        "seed_start": SUITE_SEED_STARTS[suite],
        "per_bin": per_bin,
        "command": f"python -m hf_thought_cloning.evaluation.build_suites --suites {suite} --per-bin {per_bin}",
        "minigrid": version("minigrid"),
    }
    return write_suite(output / f"{suite}.jsonl", header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hf_thought_cloning.evaluation.build_suites",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--per-bin", type=int, default=30, help="environments per bin (default 30)")
    parser.add_argument("--output", type=Path, default=DATA_DIR, help="folder for the suite files")
    parser.add_argument("--suites", nargs="+", choices=sorted(SUITES), default=list(SUITES))
    args = parser.parse_args(argv)
    if args.per_bin < 1:
        parser.error("--per-bin must be at least 1")
    # Checked before the scan (minutes of bot play), not when the first file is written.
    problem = not_a_folder(args.output)
    if problem:
        parser.error(f"--output {args.output} {problem}: give a folder for the suite files (it is created)")
    for suite in args.suites:
        path = build(suite, args.per_bin, args.output)
        print(f"{suite}: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
