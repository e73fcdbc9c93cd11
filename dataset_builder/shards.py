"""Generating and writing one shard: episodes -> Arrow table with the dataset features -> Parquet.

A shard is finished when its Parquet file exists under its final name. Its statistics file (with the
failed seeds) is written first and the Parquet file renamed into place last, both atomically, so an
interrupted run never leaves a file that looks finished but is not.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset

from dataset_builder.episodes import Episode, EpisodeFailure, make_env, run_episode
from dataset_builder.files import atomic_write_bytes, atomic_write_json
from dataset_builder.plan import ShardTask
from dataset_builder.schema import FEATURES

PARQUET_COMPRESSION = "zstd"
PARQUET_COMPRESSION_LEVEL = 9


@dataclass
class ShardStats:
    path: str
    level: str
    split: str
    seed_start: int
    seed_stop: int
    episodes: int = 0
    steps: int = 0
    noisy_steps: int = 0
    failures: list[dict] = field(default_factory=list)
    sha256: str = ""

    @property
    def attempted(self) -> int:
        return self.seed_stop - self.seed_start


def noise_seed_for(noise_seed: int, level: str) -> int:
    """Per-level noise stream, so two levels sharing a seed do not share noise draws."""
    return (noise_seed << 32) ^ zlib.crc32(level.encode())


def episodes_to_table(episodes: list[Episode]) -> pa.Table:
    """Rows in the dataset schema (``datasets`` features embedded in the Arrow schema metadata)."""
    columns = {
        "level": [e.level for e in episodes],
        "seed": [e.seed for e in episodes],
        "mission": [e.mission for e in episodes],
        "images": [e.images for e in episodes],
        "directions": [e.directions for e in episodes],
        "actions": [e.actions for e in episodes],
        "thoughts": [e.thoughts for e in episodes],
        "noisy": [e.noisy for e in episodes],
        "reward": [e.reward for e in episodes],
        "success": [e.success for e in episodes],
        "num_steps": [e.num_steps for e in episodes],
        "max_steps": [e.max_steps for e in episodes],
    }
    return Dataset.from_dict(columns, features=FEATURES).data.table


def generate_shard(
    task: ShardTask, output: str, noise_rate: float, noise_seed: int, strict_templates: bool = False
) -> ShardStats:
    """Play every seed of ``task``, write its Parquet file and statistics; return the statistics."""
    env = make_env(task.level)
    stats = ShardStats(task.data_path, task.level, task.split, task.seed_start, task.seed_stop)
    episodes = []
    level_noise_seed = noise_seed_for(noise_seed, task.level)
    for seed in range(task.seed_start, task.seed_stop):
        result = run_episode(env, task.level, seed, noise_rate, level_noise_seed, strict_templates)
        if isinstance(result, EpisodeFailure):
            stats.failures.append({k: v for k, v in asdict(result).items() if k != "level"})
            continue
        episodes.append(result)
        stats.episodes += 1
        stats.steps += result.num_steps
        stats.noisy_steps += sum(result.noisy)
    env.close()
    table = episodes_to_table(episodes)
    root = Path(output)
    # Statistics first: a Parquet file under its final name always has its statistics beside it.
    data = _serialize_table(table)
    stats.sha256 = hashlib.sha256(data).hexdigest()
    atomic_write_json(root / task.stats_path, asdict(stats), sort_keys=True)
    atomic_write_bytes(root / task.data_path, data)
    return stats


def _serialize_table(table: pa.Table) -> bytes:
    """Parquet bytes of ``table`` (zstd); the same table always gives the same bytes."""
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression=PARQUET_COMPRESSION,
        compression_level=PARQUET_COMPRESSION_LEVEL,
        row_group_size=256,
    )
    return sink.getvalue().to_pybytes()


def shard_is_finished(root: Path, task: ShardTask) -> bool:
    return (root / task.data_path).is_file() and (root / task.stats_path).is_file()
