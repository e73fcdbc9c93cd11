"""Statistics of a generated dataset folder and its ``README.md`` dataset card."""

from __future__ import annotations

import collections
import importlib.metadata
import json
from pathlib import Path

import pyarrow.parquet as pq
from huggingface_hub import DatasetCard, DatasetCardData

from dataset_builder.plan import ShardTask
from dataset_builder.schema import COLUMN_DOCS, FEATURES, SCHEMA_VERSION
from dataset_builder.shards import atomic_write_text
from hf_thought_cloning.vocabulary import split_words

TEMPLATE = Path(__file__).with_name("templates") / "dataset_card.md"
VERSIONED_PACKAGES = ("hf-thought-cloning", "minigrid", "gymnasium", "numpy", "datasets", "pyarrow")


def library_versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in VERSIONED_PACKAGES}


def split_statistics(root: Path, tasks: list[ShardTask]) -> dict:
    """Counts over the shards of one level and split (reads only the small columns)."""
    episodes = steps = noisy = 0
    thoughts: set[str] = set()
    failures: collections.Counter[str] = collections.Counter()
    for task in tasks:
        table = pq.read_table(root / task.data_path, columns=["thoughts", "noisy", "num_steps"])
        episodes += table.num_rows
        steps += sum(table.column("num_steps").to_pylist())
        noisy += sum(sum(flags) for flags in table.column("noisy").to_pylist())
        for episode_thoughts in table.column("thoughts").to_pylist():
            thoughts.update(episode_thoughts)
        stats = json.loads((root / task.stats_path).read_text())
        failures.update(failure["reason"] for failure in stats["failures"])
    words = {word for thought in thoughts for word in split_words(thought)}
    return {
        "seeds": sum(t.seed_stop - t.seed_start for t in tasks),
        "episodes": episodes,
        "steps": steps,
        "mean_length": round(steps / episodes, 2) if episodes else 0.0,
        "distinct_thoughts": len(thoughts),
        "vocabulary": len(words),
        "noisy_steps": noisy,
        "noisy_fraction": round(noisy / steps, 4) if steps else 0.0,
        "failures": dict(sorted(failures.items())),
    }


def dataset_statistics(root: Path, manifest: dict) -> dict[str, dict[str, dict]]:
    """``{level: {split: statistics}}`` for every level and split of the manifest."""
    grouped: dict[tuple[str, str], list[ShardTask]] = collections.defaultdict(list)
    for task in manifest["shards"]:
        shard = ShardTask(**task)
        grouped[(shard.level, shard.split)].append(shard)
    return {
        level: {split: split_statistics(root, grouped[(level, split)]) for split in manifest["splits"]}
        for level in manifest["levels"]
    }


def _type_name(feature) -> str:
    text = repr(feature)
    return text.replace("Value(dtype=", "Value(").replace("'", "")


def render_card(root: Path, manifest: dict, statistics: dict) -> DatasetCard:
    configs = [
        {
            "config_name": level,
            "data_files": [
                {"split": split, "path": f"data/{level}/{split}-*.parquet"} for split in manifest["splits"]
            ],
        }
        for level in manifest["levels"]
    ]
    total_episodes = sum(s["episodes"] for level in statistics.values() for s in level.values())
    card_data = DatasetCardData(
        license="apache-2.0",
        language="en",
        pretty_name="BabyAI thought-action trajectories (Thought Cloning)",
        task_categories=["reinforcement-learning", "robotics"],
        size_categories=_size_category(total_episodes),
        tags=["thought-cloning", "babyai", "minigrid", "imitation-learning", "interpretability"],
        configs=configs,
    )
    stats_rows = []
    for level, per_split in statistics.items():
        for split, stats in per_split.items():
            failures = ", ".join(f"{reason}: {n}" for reason, n in stats["failures"].items()) or "0"
            stats_rows.append({"level": level, "split": split, **stats, "failures": failures})
    return DatasetCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        repo_hint=f"<org>/{root.resolve().name}",
        levels=manifest["levels"],
        generator_version=manifest["versions"]["hf-thought-cloning"],
        schema_version=SCHEMA_VERSION,
        schema_rows=[{"name": n, "type": _type_name(FEATURES[n]), "doc": COLUMN_DOCS[n]} for n in FEATURES],
        stats_rows=stats_rows,
        noise_rate=manifest["noise_rate"],
        noise_seed=manifest["noise_seed"],
        command=manifest["command"],
        splits=manifest["splits"],
        versions=manifest["versions"],
    )


def _size_category(episodes: int) -> str:
    for bound, name in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if episodes < bound:
            return name
    return "1M<n<10M"


def write_card(root: Path, manifest: dict) -> Path:
    """Compute the statistics and write ``README.md`` (atomically, last: it marks a complete dataset)."""
    statistics = dataset_statistics(root, manifest)
    atomic_write_text(
        root / "generation" / "statistics.json", json.dumps(statistics, indent=1, sort_keys=True) + "\n"
    )
    card = render_card(root, manifest, statistics)
    path = root / "README.md"
    atomic_write_text(path, str(card))
    return path
