"""Checking a dataset folder: layout, card, schema, per-step lengths, vocabulary, seeds, integrity."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import Features
from huggingface_hub import DatasetCard

from dataset_builder.generate import GenerationError, load_manifest, tasks_of
from dataset_builder.plan import ShardTask
from dataset_builder.schema import FEATURES, SCHEMA_VERSION, STEP_COLUMNS
from hf_thought_cloning.vocabulary import mission_vocabulary, split_words, thought_vocabulary

MAX_ERRORS_PER_KIND = 5


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


def validate(folder: str | Path) -> ValidationReport:
    """Every check; problems are collected (not raised) so the user sees them all at once."""
    root = Path(folder)
    report = ValidationReport(root)
    if not root.is_dir():
        report.errors.append(f"{root} is not a folder")
        return report
    try:
        manifest = load_manifest(root)
    except GenerationError as error:
        report.errors.append(str(error))
        return report
    if manifest.get("schema_version") != SCHEMA_VERSION:
        report.errors.append(
            f"schema version {manifest.get('schema_version')} is not the supported {SCHEMA_VERSION}: "
            "regenerate the dataset with this version of dataset_builder"
        )
        return report
    tasks = tasks_of(manifest)
    _check_card(root, manifest, report)
    _check_split_ranges(manifest, report)
    _check_files(root, tasks, report)
    thought_words, mission_words = set(thought_vocabulary()), set(mission_vocabulary())
    for task in tasks:
        _check_shard(root, task, report, thought_words, mission_words)
    return report


def _check_card(root: Path, manifest: dict, report: ValidationReport) -> None:
    path = root / "README.md"
    if not path.is_file():
        report.errors.append(
            "README.md (dataset card) is missing: the generation did not finish; "
            "rerun the generate command with --resume"
        )
        return
    configs = DatasetCard.load(path).data.to_dict().get("configs") or []
    by_name = {c.get("config_name"): c for c in configs}
    for level in manifest["levels"]:
        config = by_name.get(level)
        if config is None:
            report.errors.append(f"README.md has no dataset config for level {level}")
            continue
        splits = {entry["split"] for entry in config.get("data_files", [])}
        if splits != set(manifest["splits"]):
            report.errors.append(
                f"README.md config {level} lists splits {sorted(splits)}, expected {sorted(manifest['splits'])}"
            )


def _check_split_ranges(manifest: dict, report: ValidationReport) -> None:
    ranges = sorted((start, stop, split) for split, (start, stop) in manifest["splits"].items())
    for (_start_a, stop_a, split_a), (start_b, _, split_b) in zip(ranges, ranges[1:], strict=False):
        if start_b < stop_a:
            report.errors.append(f"seed ranges of splits {split_a} and {split_b} overlap")
    for start, stop, split in ranges:
        if stop <= start:
            report.errors.append(f"split {split} has an empty seed range {start}:{stop}")


def _check_files(root: Path, tasks: list[ShardTask], report: ValidationReport) -> None:
    expected = {task.data_path for task in tasks}
    present = (
        {str(p.relative_to(root)) for p in (root / "data").rglob("*.parquet")}
        if (root / "data").is_dir()
        else set()
    )
    for missing in sorted(expected - present):
        report.errors.append(f"shard {missing} is missing: rerun the generate command with --resume")
    for extra in sorted(present - expected):
        report.errors.append(
            f"{extra} is not part of this dataset's manifest (foreign or stale file): remove it"
        )


def _storage(column: pa.ChunkedArray) -> pa.Array:
    """The plain Arrow lists under a ``datasets`` extension type (Array4D stores nested lists)."""
    array = column.combine_chunks()
    return array.storage if isinstance(array, pa.ExtensionArray) else array


def _check_shard(root: Path, task: ShardTask, report: ValidationReport, thought_words, mission_words) -> None:
    path, stats_path = root / task.data_path, root / task.stats_path
    if not path.is_file():
        return
    where = task.data_path
    if not stats_path.is_file():
        report.errors.append(f"{task.stats_path} is missing: the shard {where} cannot be checked")
        return
    stats = json.loads(stats_path.read_text())
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != stats.get("sha256"):
        report.errors.append(f"{where} does not match its recorded checksum (corrupted or modified)")
    try:
        table = pq.read_table(pa.BufferReader(data))
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
