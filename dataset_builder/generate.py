"""Generating a thought-trajectory dataset folder: plan, shard work over processes and machines, resume.

Folder layout (the same as the Hub dataset repo it is pushed to)::

    README.md                                     dataset card, written last: marks a complete dataset
    data/<level>/<split>-00000-of-00004.parquet  episodes, one row each
    generation/manifest.json                      the plan: settings, seed ranges, shards, versions
    generation/shards/<level>/<split>-....json   per-shard statistics and failed seeds
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from dataset_builder import card
from dataset_builder.episodes import make_env
from dataset_builder.plan import DEFAULT_SPLITS, SeedRange, ShardTask, plan_shards, plan_splits
from dataset_builder.schema import SCHEMA_VERSION
from dataset_builder.shards import (
    TMP_MARKER,
    ShardStats,
    atomic_write_text,
    generate_shard,
    shard_is_finished,
)

MANIFEST_PATH = "generation/manifest.json"
DATASET_FORMAT = "hf-thought-cloning/thought-trajectories"


class GenerationError(RuntimeError):
    """The output folder or the settings do not allow generation to go on."""


@dataclass
class GenerateArgs:
    """Settings of ``python -m dataset_builder generate``."""

    output: str = field(
        metadata={"help": "Dataset folder to write (created; the layout of a Hub dataset repo)."}
    )
    level: list[str] = field(
        default_factory=lambda: ["BabyAI-MiniBossLevel-v0"],
        metadata={"help": "BabyAI level id(s); each becomes one dataset config."},
    )
    episodes: int | None = field(
        default=None, metadata={"help": "Number of seeds (episodes attempted) per level, over all splits."}
    )
    seed_start: int = field(default=0, metadata={"help": "First seed; splits take consecutive seed ranges."})
    seeds: str | None = field(
        default=None, metadata={"help": "Explicit seed range START:STOP (instead of --episodes)."}
    )
    splits: str = field(
        default=DEFAULT_SPLITS,
        metadata={"help": "name=fraction, name=count or name=START:STOP, comma separated."},
    )
    noise_rate: float = field(
        default=0.01, metadata={"help": "Per-step probability of starting a 1-5 step random-action segment."}
    )
    noise_seed: int = field(
        default=0, metadata={"help": "Seed of the noise draws (with the level and episode seed)."}
    )
    shard_size: int = field(default=500, metadata={"help": "Seeds per Parquet shard (the unit of resume)."})
    num_proc: int = field(default=1, metadata={"help": "Worker processes on this machine."})
    shard_index: int = field(
        default=0, metadata={"help": "This machine's index when splitting over machines."}
    )
    num_shards: int = field(
        default=1, metadata={"help": "Number of machines sharing the work (shard i takes every n-th)."}
    )
    strict_templates: bool = field(
        default=False,
        metadata={
            "help": "Abort at the first plan the thought templates cannot describe (default: record it as a failure)."
        },
    )
    resume: bool = field(
        default=False, metadata={"help": "Continue an interrupted run in an existing folder."}
    )
    overwrite: bool = field(
        default=False, metadata={"help": "Delete an existing dataset folder and start over."}
    )


# Settings that define the dataset's content: a resumed run must match them exactly.
CONTENT_KEYS = ("levels", "splits", "noise_rate", "noise_seed", "shard_size", "schema_version")


def build_manifest(args: GenerateArgs) -> dict:
    """The plan of the dataset; raises ``ValueError`` subclasses for invalid settings."""
    if not 0.0 <= args.noise_rate < 1.0:
        raise GenerationError(f"--noise-rate must be in [0, 1), got {args.noise_rate}")
    if args.num_proc < 1:
        raise GenerationError(f"--num-proc must be >= 1, got {args.num_proc}")
    if not 0 <= args.shard_index < args.num_shards:
        raise GenerationError(
            f"--shard-index must be in [0, --num-shards={args.num_shards}), got {args.shard_index}"
        )
    levels = list(dict.fromkeys(args.level))
    for level in levels:
        make_env(level).close()  # unknown level ids fail here, before anything is written
    ranges = plan_splits(args.splits, args.episodes, args.seed_start, args.seeds)
    tasks = plan_shards(levels, ranges, args.shard_size)
    return {
        "format": DATASET_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "levels": levels,
        "splits": {r.split: [r.start, r.stop] for r in ranges},
        "noise_rate": args.noise_rate,
        "noise_seed": args.noise_seed,
        "shard_size": args.shard_size,
        "command": canonical_command(args, levels, ranges),
        "versions": card.library_versions(),
        "shards": [asdict(task) for task in tasks],
    }


def canonical_command(args: GenerateArgs, levels: list[str], ranges: list[SeedRange]) -> str:
    """The fully explicit command that regenerates this dataset byte for byte."""
    splits = ",".join(f"{r.split}={r.start}:{r.stop}" for r in ranges)
    return (
        f"python -m dataset_builder generate --level {' '.join(levels)} --splits {splits} "
        f"--noise-rate {args.noise_rate} --noise-seed {args.noise_seed} --shard-size {args.shard_size} "
        f"--output {Path(args.output).name}"
    )


def load_manifest(root: Path) -> dict:
    path = root / MANIFEST_PATH
    if not path.is_file():
        raise GenerationError(f"{root} is not a thought dataset folder: {MANIFEST_PATH} is missing")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise GenerationError(f"{path} is corrupted ({error}); regenerate with --overwrite") from error
    if manifest.get("format") != DATASET_FORMAT:
        raise GenerationError(f"{path} is not a {DATASET_FORMAT} manifest")
    return manifest


def tasks_of(manifest: dict) -> list[ShardTask]:
    return [ShardTask(**task) for task in manifest["shards"]]


def prepare_output(root: Path, manifest: dict, resume: bool, overwrite: bool) -> None:
    """Create, reuse (``resume``) or clear (``overwrite``) the output folder; never clobber foreign data."""
    if resume and overwrite:
        raise GenerationError("--resume and --overwrite contradict each other: choose one")
    if root.exists() and not root.is_dir():
        raise GenerationError(f"--output {root} exists and is not a folder")
    exists = root.is_dir() and any(root.iterdir())
    if exists and overwrite:
        if not (root / MANIFEST_PATH).is_file():
            raise GenerationError(
                f"--overwrite refused: {root} is not empty and is not a thought dataset folder; "
                "choose another --output"
            )
        shutil.rmtree(root)
        exists = False
    if exists and not resume:
        raise GenerationError(
            f"--output {root} already exists: pass --resume to continue an interrupted run, "
            "or --overwrite to delete it and start over"
        )
    if exists:
        previous = load_manifest(root)
        changed = [key for key in CONTENT_KEYS if previous.get(key) != manifest.get(key)]
        if changed:
            details = ", ".join(f"{k}: {previous.get(k)!r} -> {manifest.get(k)!r}" for k in changed)
            raise GenerationError(f"--resume with different settings than {root} was made with ({details})")
        for stale in root.rglob(f".*{TMP_MARKER}*"):  # debris of an interrupted write
            stale.unlink()
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / MANIFEST_PATH, json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def _run_task(job: tuple[ShardTask, str, float, int, bool]) -> ShardStats:
    return generate_shard(*job)


def generate(args: GenerateArgs) -> dict:
    """Generate (or resume) the dataset folder described by ``args``; returns a summary."""
    root = Path(args.output)
    manifest = build_manifest(args)
    prepare_output(root, manifest, args.resume, args.overwrite)
    tasks = tasks_of(manifest)
    mine = [t for i, t in enumerate(tasks) if i % args.num_shards == args.shard_index]
    todo = [t for t in mine if not shard_is_finished(root, t)]
    jobs = [(task, str(root), args.noise_rate, args.noise_seed, args.strict_templates) for task in todo]
    episodes_todo = sum(t.seed_stop - t.seed_start for t in todo)
    progress = tqdm(total=episodes_todo, unit="episode", desc="generating", dynamic_ncols=True)
    with progress:
        if args.num_proc == 1 or len(jobs) <= 1:
            results = map(_run_task, jobs)
            for stats in results:
                progress.update(stats.attempted)
        else:
            # fork: workers inherit the imported modules instead of re-importing torch/transformers
            # (seconds each); they never touch torch, so forking after its import is safe.
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with context.Pool(min(args.num_proc, len(jobs))) as pool:
                for stats in pool.imap_unordered(_run_task, jobs):
                    progress.update(stats.attempted)
    missing = [t for t in tasks if not shard_is_finished(root, t)]
    summary = {
        "output": str(root),
        "shards_total": len(tasks),
        "shards_generated_now": len(todo),
        "shards_missing": len(missing),
        "complete": not missing,
    }
    if not missing:
        summary["card"] = str(card.write_card(root, manifest))
        statistics = json.loads((root / "generation" / "statistics.json").read_text())
        summary["failures"] = failures = {}
        for level, per_split in statistics.items():
            for split, stats in per_split.items():
                for reason, count in stats["failures"].items():
                    failures[f"{level}/{split}/{reason}"] = count
    return summary
