"""Checking a dataset folder: layout, card, schema, per-step lengths, vocabulary, seeds, integrity.

``integrity_problems`` is the cheap part (manifest, card, shard files and checksums against each other), which
the trainer runs before it reads a local folder; ``validate`` runs it and then checks every shard's content.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import yaml
from datasets import Features
from datasets.data_files import resolve_pattern, sanitize_patterns
from huggingface_hub import DatasetCard

from dataset_builder.files import read_parquet
from dataset_builder.generate import GenerationError, load_manifest, tasks_of
from dataset_builder.plan import ShardTask
from dataset_builder.schema import FEATURES, SCHEMA_VERSION, STEP_COLUMNS
from dataset_builder.vocabulary import mission_vocabulary, split_words, thought_vocabulary

MAX_ERRORS_PER_KIND = 5
SHARD_STATS_KEYS = ("sha256", "episodes", "failures")


class DatasetFolderError(ValueError):
    """A file of the dataset folder cannot be read as what it should be; the message names the file."""


@dataclass
class ValidationReport:
    root: Path
    errors: list[str] = field(default_factory=list)
    episodes: int = 0
    steps: int = 0
    shards: int = 0
    failures: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        if self.ok:
            return (
                f"OK: {self.root}: {self.shards} shards, {self.episodes} episodes, {self.steps} steps, "
                f"{self.failures} bot failures recorded"
            )
        shown = "\n".join(f"  - {e}" for e in self.errors)
        return f"INVALID: {self.root}: {len(self.errors)} problem(s)\n{shown}"


def read_manifest(folder: str | Path) -> dict:
    """The folder's manifest; DatasetFolderError when the folder or its manifest cannot be read."""
    root = Path(folder)
    if not root.is_dir():
        raise DatasetFolderError(f"{root} is not a folder")
    try:
        return load_manifest(root)
    except GenerationError as error:
        raise DatasetFolderError(str(error)) from error


def integrity_problems(folder: str | Path) -> list[str]:
    """Whether the folder holds exactly the dataset its manifest describes, without reading the episodes.

    Checks the schema version, that the card's ``configs`` read exactly the manifest's shards of each level and
    split (a card narrowed to fewer shards, or widened to foreign files, is a problem), that every shard exists
    and no foreign one does, and every shard's checksum against its statistics (a shard copied over another
    fails it). Returns the problems (empty: intact); raises DatasetFolderError when the manifest, the card's
    YAML or a shard's statistics file cannot be read.
    """
    root = Path(folder)
    manifest = read_manifest(root)
    if manifest["schema_version"] != SCHEMA_VERSION:
        return [
            f"schema version {manifest['schema_version']} is not the supported {SCHEMA_VERSION}: "
            "regenerate the dataset with this version of dataset_builder"
        ]
    tasks = tasks_of(manifest)
    problems: list[str] = []
    _check_card(root, manifest, tasks, problems)
    _check_files(root, tasks, problems)
    for task in tasks:
        if (root / task.data_path).is_file():
            _check_checksum(root, task, problems)
    return problems


def validate(folder: str | Path) -> ValidationReport:
    """Every check; problems are collected (not raised) so the user sees them all at once.

    Raises DatasetFolderError when a file that the checks need cannot be read at all (see
    ``integrity_problems``).
    """
    root = Path(folder)
    report = ValidationReport(root)
    report.errors.extend(integrity_problems(root))
    manifest = load_manifest(root)
    if manifest["schema_version"] != SCHEMA_VERSION:
        return report
    _check_split_ranges(manifest, report)
    thought_words, mission_words = set(thought_vocabulary()), set(mission_vocabulary())
    for task in tasks_of(manifest):
        _check_shard(root, task, report, thought_words, mission_words)
    return report


def load_card_configs(root: Path) -> list:
    """The ``configs`` of the folder's ``README.md`` front matter; DatasetFolderError when the YAML is broken."""
    path = root / "README.md"
    try:
        card = DatasetCard.load(path)
    except yaml.YAMLError as error:
        raise DatasetFolderError(
            f"{path}: its YAML front matter does not parse ({error}); restore the card with "
            f"`python -m dataset_builder card {root}`"
        ) from error
    return card.data.to_dict().get("configs") or []


def _check_card(root: Path, manifest: dict, tasks: list[ShardTask], problems: list[str]) -> None:
    if not (root / "README.md").is_file():
        problems.append(
            "README.md (dataset card) is missing: the generation did not finish; "
            "rerun the generate command with --resume"
        )
        return
    configs = load_card_configs(root)
    if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        problems.append("README.md `configs` is not a list of dataset configs")
        return
    by_name = {c.get("config_name"): c for c in configs}
    for name in by_name.keys() - set(manifest["levels"]):
        problems.append(f"README.md has a dataset config {name!r} that is not a level of this dataset")
    for level in manifest["levels"]:
        config = by_name.get(level)
        if config is None:
            problems.append(f"README.md has no dataset config for level {level}")
            continue
        try:
            patterns = sanitize_patterns(config.get("data_files") or [])
        except (ValueError, TypeError, KeyError) as error:
            problems.append(f"README.md config {level} has unreadable data_files: {error}")
            continue
        if set(patterns) != set(manifest["splits"]):
            problems.append(
                f"README.md config {level} lists splits {sorted(patterns)}, expected {sorted(manifest['splits'])}"
            )
        for split, split_patterns in patterns.items():
            # shards missing from the folder are reported by _check_files: the card is not at fault there
            expected = {
                t.data_path for t in tasks if t.level == level and t.split == split and (root / t.data_path).is_file()
            }
            read = _files_matching(root, split_patterns)
            if read != expected:
                problems.append(
                    f"README.md config {level} split {split} reads {len(read & expected)} of the "
                    f"{len(expected)} shards of the manifest in the folder"
                    + (f" (not: {', '.join(sorted(expected - read)[:MAX_ERRORS_PER_KIND])})" if expected - read else "")
                    + (f" and {len(read - expected)} other file(s)" if read - expected else "")
                    + f": restore the card with `python -m dataset_builder card {root}`"
                )


def _files_matching(root: Path, patterns: list[str]) -> set[str]:
    """The files that ``load_dataset`` reads for these ``data_files`` patterns (the same resolution)."""
    base = root.resolve()
    files: set[str] = set()
    for pattern in patterns:
        try:
            matched = resolve_pattern(pattern, base_path=str(base))
        except FileNotFoundError:  # a pattern that matches nothing
            continue
        for path in matched:
            resolved = Path(path).resolve()
            # a file outside the folder keeps its absolute path: it is never one of the manifest's shards
            files.add(resolved.relative_to(base).as_posix() if resolved.is_relative_to(base) else str(resolved))
    return files


def _check_split_ranges(manifest: dict, report: ValidationReport) -> None:
    ranges = sorted((start, stop, split) for split, (start, stop) in manifest["splits"].items())
    for (_start_a, stop_a, split_a), (start_b, _, split_b) in zip(ranges, ranges[1:], strict=False):
        if start_b < stop_a:
            report.errors.append(f"seed ranges of splits {split_a} and {split_b} overlap")
    for start, stop, split in ranges:
        if stop <= start:
            report.errors.append(f"split {split} has an empty seed range {start}:{stop}")


def _check_files(root: Path, tasks: list[ShardTask], problems: list[str]) -> None:
    expected = {task.data_path for task in tasks}
    present = (
        {str(p.relative_to(root)) for p in (root / "data").rglob("*.parquet")}
        if (root / "data").is_dir()
        else set()
    )
    for missing in sorted(expected - present):
        problems.append(f"shard {missing} is missing: rerun the generate command with --resume")
    for extra in sorted(present - expected):
        problems.append(f"{extra} is not part of this dataset's manifest (foreign or stale file): remove it")


def load_shard_stats(root: Path, task: ShardTask) -> dict:
    """A shard's statistics file; DatasetFolderError (naming the file) when it is not what generation writes."""
    path = root / task.stats_path
    try:
        stats = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetFolderError(
            f"{path} is not valid JSON ({error}): delete it and {task.data_path}, then rerun the generate "
            "command with --resume to regenerate that shard"
        ) from error
    if not (
        isinstance(stats, dict)
        and all(key in stats for key in SHARD_STATS_KEYS)
        and isinstance(stats["failures"], list)
        and all(isinstance(f, dict) and isinstance(f.get("seed"), int) for f in stats["failures"])
    ):
        raise DatasetFolderError(
            f"{path} is not a shard statistics object (needs {', '.join(SHARD_STATS_KEYS)}): delete it and "
            f"{task.data_path}, then rerun the generate command with --resume to regenerate that shard"
        )
    return stats


def _check_checksum(root: Path, task: ShardTask, problems: list[str]) -> None:
    if not (root / task.stats_path).is_file():
        problems.append(f"{task.stats_path} is missing: the shard {task.data_path} cannot be checked")
        return
    stats = load_shard_stats(root, task)
    if hashlib.sha256((root / task.data_path).read_bytes()).hexdigest() != stats["sha256"]:
        problems.append(f"{task.data_path} does not match its recorded checksum (corrupted or modified)")


def _storage(column: pa.ChunkedArray) -> pa.Array:
    """The plain Arrow lists under a ``datasets`` extension type (Array4D stores nested lists)."""
    array = column.combine_chunks()
    return array.storage if isinstance(array, pa.ExtensionArray) else array


def _check_shard(root: Path, task: ShardTask, report: ValidationReport, thought_words, mission_words) -> None:
    path, stats_path = root / task.data_path, root / task.stats_path
    if not path.is_file() or not stats_path.is_file():  # reported by integrity_problems
        return
    where = task.data_path
    stats = load_shard_stats(root, task)
    try:
        table = read_parquet(pa.BufferReader(path.read_bytes()))
    except (pa.ArrowInvalid, OSError) as error:
        report.errors.append(f"{where} is not a readable Parquet file: {error}")
        return
    report.shards += 1
    try:
        features = Features.from_arrow_schema(table.schema)
    except (ValueError, TypeError, KeyError) as error:
        report.errors.append(f"{where} has no valid `datasets` feature metadata: {error}")
        return
    if features != FEATURES:
        report.errors.append(f"{where} features differ from schema {SCHEMA_VERSION}: {features}")
        return
    report.episodes += table.num_rows
    report.failures += len(stats["failures"])
    num_steps = table.column("num_steps")
    report.steps += pc.sum(num_steps).as_py() or 0
    problems: list[str] = []
    for column in STEP_COLUMNS:
        lengths = pc.list_value_length(_storage(table.column(column)))
        bad = pc.sum(pc.not_equal(lengths, num_steps)).as_py() or 0
        if bad:
            problems.append(f"{bad} episode(s) whose `{column}` length differs from num_steps")
    images = _storage(table.column("images"))
    for depth, size in enumerate((7, 7, 3)):
        images = pc.list_flatten(images)
        if len(images) and not pc.all(pc.equal(pc.list_value_length(images), size)).as_py():
            problems.append(f"`images` dimension {depth + 2} is not {size}")
    if len(images) and pc.max(pc.list_flatten(images)).as_py() > 255:
        problems.append("`images` values exceed 255")
    for column, low, high in (("actions", 0, 6), ("directions", 0, 3)):
        values = pc.list_flatten(table.column(column))
        if len(values) and (pc.min(values).as_py() < low or pc.max(values).as_py() > high):
            problems.append(f"`{column}` values outside {low}..{high}")
    if table.num_rows and not pc.all(table.column("success")).as_py():
        problems.append("episodes with success=False (only solved demonstrations are stored)")
    if table.num_rows and pc.min(table.column("reward")).as_py() <= 0:
        problems.append("episodes with reward <= 0")
    levels = set(table.column("level").to_pylist())
    if levels - {task.level}:
        problems.append(f"rows of other levels {sorted(levels - {task.level})}")
    unknown_thought = {
        w for t in set(pc.list_flatten(table.column("thoughts")).to_pylist()) for w in split_words(t)
    } - thought_words
    if unknown_thought:
        problems.append(
            f"thought words outside the thought vocabulary: {sorted(unknown_thought)[:MAX_ERRORS_PER_KIND]}"
        )
    unknown_mission = {w for m in table.column("mission").to_pylist() for w in split_words(m)} - mission_words
    if unknown_mission:
        problems.append(
            f"mission words outside the mission vocabulary: {sorted(unknown_mission)[:MAX_ERRORS_PER_KIND]}"
        )
    seeds = table.column("seed").to_pylist()
    failed = [f["seed"] for f in stats["failures"]]
    if len(set(seeds)) != len(seeds):
        problems.append("duplicate seeds")
    if sorted(seeds + failed) != list(range(task.seed_start, task.seed_stop)):
        problems.append(
            f"stored seeds plus recorded failures do not cover seeds {task.seed_start}:{task.seed_stop} exactly "
            "(episodes lost or foreign rows)"
        )
    if stats.get("episodes") != table.num_rows:
        problems.append(f"statistics say {stats.get('episodes')} episodes, the file has {table.num_rows}")
    report.errors.extend(f"{where}: {p}" for p in problems)
