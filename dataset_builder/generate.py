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
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from dataset_builder import card
from dataset_builder.episodes import make_env
from dataset_builder.files import TMP_MARKER, atomic_write_json
from dataset_builder.plan import GenerateArgs, SeedRange, ShardTask, plan_shards, plan_splits
from dataset_builder.schema import SCHEMA_VERSION
from dataset_builder.shards import ShardStats, generate_shard, shard_is_finished

MANIFEST_PATH = "generation/manifest.json"
DATASET_FORMAT = "hf-thought-cloning/thought-trajectories"


class GenerationError(ValueError):
    """The output folder or the settings do not allow generation to go on (bad input: ``error:``, exit 2)."""


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


# What every reader of a manifest relies on (``show``, ``card``, ``validate``, ``--resume``, the trainer).
MANIFEST_KEYS = ("format", "schema_version", "levels", "splits", "noise_rate", "noise_seed", "shard_size", "shards")


def load_manifest(root: Path) -> dict:
    """``generation/manifest.json`` of the folder ``root``; GenerationError when it is missing or malformed."""
    path = root / MANIFEST_PATH
    if not path.is_file():
        raise GenerationError(f"{root} is not a thought dataset folder: {MANIFEST_PATH} is missing")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise GenerationError(f"{path} is corrupted ({error}); regenerate with --overwrite") from error
    if not isinstance(manifest, dict):
        raise GenerationError(
            f"{path} holds a JSON {type(manifest).__name__}, not a manifest object: regenerate with --overwrite"
        )
    if manifest.get("format") != DATASET_FORMAT:
        raise GenerationError(f"{path} is not a {DATASET_FORMAT} manifest")
    missing = [key for key in MANIFEST_KEYS if key not in manifest]
    if missing:
        raise GenerationError(f"{path} lacks {', '.join(missing)}: it is damaged; regenerate with --overwrite")
    problem = _manifest_shape_problem(manifest)
    if problem:
        raise GenerationError(f"{path}: {problem}: it is damaged; regenerate with --overwrite")
    return manifest


def _manifest_shape_problem(manifest: dict) -> str | None:
    levels, splits, shards = manifest["levels"], manifest["splits"], manifest["shards"]
    if not isinstance(levels, list) or not levels or not all(isinstance(level, str) for level in levels):
        return "`levels` is not a non-empty list of level ids"
    if not isinstance(splits, dict) or not splits:
        return "`splits` is not an object of split name -> [start, stop]"
    for split, seed_range in splits.items():
        if not (
            isinstance(seed_range, list)
            and len(seed_range) == 2
            and all(isinstance(seed, int) and not isinstance(seed, bool) for seed in seed_range)
        ):
            return f"split {split!r} has the seed range {seed_range!r}, not [start, stop]"
    if not isinstance(shards, list) or not all(isinstance(task, dict) for task in shards):
        return "`shards` is not a list of shard objects"
    for task in shards:
        try:
            ShardTask(**task)
        except TypeError:
            return f"shard entry {task!r} does not have the fields of a shard"
    return None


def tasks_of(manifest: dict) -> list[ShardTask]:
    return [ShardTask(**task) for task in manifest["shards"]]


def prepare_output(root: Path, manifest: dict, resume: bool, overwrite: bool) -> None:
    """Create, reuse (``resume``) or clear (``overwrite``) the output folder; never clobber foreign data."""
    if resume and overwrite:
        raise GenerationError("--resume and --overwrite contradict each other: choose one")
    if root.exists() and not root.is_dir():
        raise GenerationError(f"--output {root} exists and is not a folder")
    inside_file = next((parent for parent in root.parents if parent.exists() and not parent.is_dir()), None)
    if inside_file is not None:
        raise GenerationError(f"--output {root} lies inside {inside_file}, which is a file: choose another --output")
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
    atomic_write_json(root / MANIFEST_PATH, manifest, sort_keys=True)


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
            # fork: workers inherit the imported modules (datasets, minigrid) instead of importing them
            # again, and the objects the command line froze stay shared between the processes.
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
