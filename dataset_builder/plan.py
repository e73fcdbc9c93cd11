"""The settings of ``generate``, seed ranges per split and their division into shards: the whole dataset is
decided here, up front (standard library only, so the command line parses its options before the heavy imports).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_SPLITS = "train=0.9,validation=0.05,test=0.05"


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


class PlanError(ValueError):
    """A seed or split specification that cannot give a valid dataset."""


@dataclass(frozen=True)
class SeedRange:
    """Seeds ``start`` (included) to ``stop`` (excluded) of one split."""

    split: str
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class ShardTask:
    """One parquet file: a contiguous run of seeds of one level and split."""

    level: str
    split: str
    index: int
    count: int
    seed_start: int
    seed_stop: int

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:05d}-of-{self.count:05d}"

    @property
    def data_path(self) -> str:
        return f"data/{self.level}/{self.name}.parquet"

    @property
    def stats_path(self) -> str:
        return f"generation/shards/{self.level}/{self.name}.json"


def parse_seed_range(text: str) -> tuple[int, int]:
    """``"START:STOP"`` -> (start, stop), non-empty and non-negative."""
    try:
        start_text, stop_text = text.split(":")
        start, stop = int(start_text), int(stop_text)
    except ValueError:
        raise PlanError(f"seed range {text!r} is not of the form START:STOP (e.g. 0:10000)") from None
    if start < 0 or stop <= start:
        raise PlanError(f"seed range {text!r} is empty or negative: need 0 <= START < STOP")
    return start, stop


def plan_splits(
    splits: str = DEFAULT_SPLITS,
    episodes: int | None = None,
    seed_start: int = 0,
    seeds: str | None = None,
) -> list[SeedRange]:
    """Disjoint, contiguous seed ranges for each split.

    ``splits`` is ``name=fraction,...`` (fractions of ``episodes`` or of the ``seeds`` range),
    ``name=count,...`` (episode counts), or ``name=START:STOP,...`` (explicit ranges).
    """
    entries = []
    for item in filter(None, (part.strip() for part in splits.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise PlanError(f"split {item!r} is not of the form name=value (e.g. train=0.9)")
        entries.append((name.strip(), value.strip()))
    if not entries:
        raise PlanError("no splits given: use e.g. --splits train=0.9,validation=0.05,test=0.05")
    names = [name for name, _ in entries]
    if len(set(names)) != len(names):
        raise PlanError(f"split names repeat: {names}")

    if all(":" in value for _, value in entries):
        if episodes is not None or seeds is not None:
            raise PlanError(
                "explicit split ranges (name=START:STOP) already fix the seeds: drop --episodes/--seeds"
            )
        ranges = [SeedRange(name, *parse_seed_range(value)) for name, value in entries]
        ordered = sorted(ranges, key=lambda r: r.start)
        for first, second in zip(ordered, ordered[1:], strict=False):
            if second.start < first.stop:
                raise PlanError(
                    f"seed ranges of splits {first.split!r} ({first.start}:{first.stop}) and "
                    f"{second.split!r} ({second.start}:{second.stop}) overlap: splits must use disjoint seeds"
                )
        return ranges
    if any(":" in value for _, value in entries):
        raise PlanError("mix of explicit ranges and sizes in --splits: give all as START:STOP or none")

    if seeds is not None:
        if episodes is not None:
            raise PlanError("--seeds START:STOP already fixes the number of episodes: drop --episodes")
        seed_start, stop = parse_seed_range(seeds)
        episodes = stop - seed_start
    if seed_start < 0:
        raise PlanError(f"--seed-start must be >= 0, got {seed_start}")

    try:
        sizes = [float(value) for _, value in entries]
    except ValueError:
        raise PlanError(f"split sizes must be numbers, fractions or START:STOP ranges: {splits!r}") from None
    if all(size.is_integer() and size >= 1 for size in sizes) and not (len(sizes) == 1 and sizes[0] == 1):
        counts = [int(size) for size in sizes]
        if episodes is not None and sum(counts) != episodes:
            raise PlanError(f"split counts sum to {sum(counts)} but --episodes is {episodes}")
    else:
        if episodes is None:
            raise PlanError("split fractions need --episodes N or --seeds START:STOP")
        if any(size <= 0 for size in sizes) or abs(sum(sizes) - 1.0) > 1e-6:
            raise PlanError(f"split fractions must be positive and sum to 1, got {sizes}")
        counts = [int(episodes * size) for size in sizes[:-1]]
        counts.append(episodes - sum(counts))
    for name, count in zip(names, counts, strict=True):
        if count <= 0:
            raise PlanError(f"split {name!r} gets no episodes: raise --episodes or that split's share")

    ranges, start = [], seed_start
    for name, count in zip(names, counts, strict=True):
        ranges.append(SeedRange(name, start, start + count))
        start += count
    return ranges


def plan_shards(levels: list[str], ranges: list[SeedRange], shard_size: int) -> list[ShardTask]:
    """Every shard of the dataset, in a fixed order (level, split, index)."""
    if shard_size <= 0:
        raise PlanError(f"--shard-size must be positive, got {shard_size}")
    tasks = []
    for level in levels:
        for seed_range in ranges:
            count = -(-len(seed_range) // shard_size)
            for index in range(count):
                start = seed_range.start + index * shard_size
                stop = min(start + shard_size, seed_range.stop)
                tasks.append(ShardTask(level, seed_range.split, index, count, start, stop))
    return tasks
