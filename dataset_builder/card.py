"""Statistics of a generated dataset folder and its ``README.md`` dataset card."""

from __future__ import annotations

import collections
import json
from pathlib import Path

from huggingface_hub import DatasetCard, DatasetCardData

from dataset_builder.files import atomic_write_json, atomic_write_text, package_versions, read_parquet
from dataset_builder.plan import ShardTask
from dataset_builder.schema import COLUMN_DOCS, FEATURES, SCHEMA_VERSION
from dataset_builder.vocabulary import split_words

TEMPLATE = Path(__file__).with_name("templates") / "dataset_card.md"
STATISTICS_PATH = "generation/statistics.json"
VERSIONED_PACKAGES = ("hf-thought-cloning", "minigrid", "gymnasium", "numpy", "datasets", "pyarrow")


def library_versions() -> dict[str, str | None]:
    return package_versions(VERSIONED_PACKAGES)


def split_statistics(root: Path, tasks: list[ShardTask]) -> dict:
    """Counts over the shards of one level and split (reads only the small columns)."""
    episodes = steps = noisy = 0
    thoughts: set[str] = set()
    failures: collections.Counter[str] = collections.Counter()
    for task in tasks:
        table = read_parquet(root / task.data_path, columns=["thoughts", "noisy", "num_steps"])
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


def repo_hint(root: Path, repo_id: str | None = None) -> str:
    """The repo id the card's usage snippet loads: ``repo_id``, else the ``<org>/<folder name>`` placeholder."""
    return repo_id if repo_id is not None else f"<org>/{root.resolve().name}"


def card_names_repo(text: str, repo_id: str) -> bool:
    """Whether a rendered card's usage snippet loads ``repo_id``."""
    return f'load_dataset("{repo_id}", ' in text


def _generation_order(manifest: dict) -> tuple[list[str], dict[str, str]]:
    """Splits and library versions in the order generation renders them.

    ``generation/manifest.json`` is written with sorted keys, so a manifest read back from a folder lists its
    splits and versions alphabetically; the shard list (plan order: level, split, index) and
    ``VERSIONED_PACKAGES`` restore the order of the in-memory manifest, so a re-rendered card equals the one
    generation wrote.
    """
    splits = list(
        dict.fromkeys(task["split"] for task in manifest["shards"] if task["split"] in manifest["splits"])
    )
    splits += [split for split in manifest["splits"] if split not in splits]
    versions = manifest["versions"]
    names = [name for name in VERSIONED_PACKAGES if name in versions]
    names += [name for name in versions if name not in names]
    return splits, {name: versions[name] for name in names}


def render_card(root: Path, manifest: dict, statistics: dict, repo_id: str | None = None) -> DatasetCard:
    """The dataset card; its usage snippet loads ``repo_id`` (default: the ``<org>/<folder name>`` placeholder)."""
    split_order, versions = _generation_order(manifest)
    configs = [
        {
            "config_name": level,
            "data_files": [
                {"split": split, "path": f"data/{level}/{split}-*.parquet"} for split in split_order
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
    for level in manifest["levels"]:
        for split in split_order:
            stats = statistics[level][split]
            failures = ", ".join(f"{reason}: {n}" for reason, n in stats["failures"].items()) or "0"
            stats_rows.append({"level": level, "split": split, **stats, "failures": failures})
    return DatasetCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        repo_hint=repo_hint(root, repo_id),
        levels=manifest["levels"],
        generator_version=manifest["versions"]["hf-thought-cloning"],
        schema_version=SCHEMA_VERSION,
        schema_rows=[{"name": n, "type": _type_name(FEATURES[n]), "doc": COLUMN_DOCS[n]} for n in FEATURES],
        stats_rows=stats_rows,
        noise_rate=manifest["noise_rate"],
        noise_seed=manifest["noise_seed"],
        command=manifest["command"],
        splits={split: manifest["splits"][split] for split in split_order},
        versions=versions,
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


def write_card(root: Path, manifest: dict, repo_id: str | None = None) -> Path:
    """Compute the statistics and write ``README.md`` (atomically, last: it marks a complete dataset)."""
    statistics = dataset_statistics(root, manifest)
    atomic_write_json(root / STATISTICS_PATH, statistics, sort_keys=True)
    card = render_card(root, manifest, statistics, repo_id)
    path = root / "README.md"
    atomic_write_text(path, str(card))
    return path


def load_statistics(root: Path, manifest: dict) -> dict:
    """``generation/statistics.json`` as written by ``write_card``; raises ValueError if it does not fit."""
    path = root / STATISTICS_PATH
    try:
        statistics = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is corrupted ({error}); regenerate the dataset with --overwrite") from error
    missing = [
        f"{level}/{split}"
        for level in manifest["levels"]
        for split in manifest["splits"]
        if not isinstance(statistics.get(level), dict) or split not in statistics[level]
    ]
    if missing:
        raise ValueError(
            f"{path} has no statistics for {', '.join(missing)} of generation/manifest.json: "
            "it does not belong to this dataset; regenerate the dataset with --overwrite"
        )
    return statistics


def rewrite_card(root: Path, repo_id: str | None = None) -> Path:
    """Re-render ``README.md`` of a finished folder for ``repo_id`` (None: the ``<org>/...`` placeholder).

    Uses what generation stored: the manifest and ``generation/statistics.json`` (computed from the shards,
    as ``write_card`` does, only if that file is missing). Only the usage snippet depends on ``repo_id``, so
    the rest of the card is byte-identical to the one generation wrote. Written atomically, and only if the
    text changes.
    """
    from dataset_builder.generate import load_manifest  # generate imports this module

    manifest = load_manifest(root)
    if not (root / STATISTICS_PATH).is_file():
        return write_card(root, manifest, repo_id)
    text = str(render_card(root, manifest, load_statistics(root, manifest), repo_id))
    path = root / "README.md"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)
    return path
