"""Thought-trajectory datasets as training batches.

``EpisodeStore`` holds one split in a few flat arrays (every frame, action and thought id of the split, with
per-episode offsets), so building a batch of 180 episodes is a handful of numpy slices rather than 180 Python
row conversions; distinct missions and thoughts are tokenized once, when the store is built.

``batch_order`` fixes which episodes form each batch as a pure function of (seed, batch number): a resumed
run, or another process of a distributed run, recomputes the same order without any saved sampler state.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from huggingface_hub import DatasetCard

from dataset_builder.files import read_parquet

from ..processing_thought_cloning import IGNORE_INDEX

REQUIRED_COLUMNS = ("seed", "mission", "images", "actions", "thoughts")
STREAMING_SHUFFLE_BUFFER = 2_000


class DatasetProblem(ValueError):
    """The dataset cannot be trained on as it is (missing columns, words the tokenizer lacks, ...)."""


def check_columns(column_names: Iterable[str], where: str) -> None:
    missing = [name for name in REQUIRED_COLUMNS if name not in set(column_names)]
    if missing:
        raise DatasetProblem(
            f"{where} lacks the columns {missing} of a thought-trajectory dataset (needs {list(REQUIRED_COLUMNS)}); "
            "make one with `python -m dataset_builder generate` or point --dataset at such a folder or repo"
        )


def check_vocabulary(tokenizer: Any, missions: Iterable[str], thoughts: Iterable[str], where: str) -> None:
    """Every word of the dataset must be in the tokenizer's vocabulary (reported before training starts)."""
    unknown: dict[str, set[str]] = {}
    for kind, texts in (("mission", missions), ("thought", thoughts)):
        for text in texts:
            for word in tokenizer.unknown_words(text):
                unknown.setdefault(word, set()).add(kind)
    if unknown:
        words = ", ".join(f"{word!r} ({'/'.join(sorted(kinds))})" for word, kinds in sorted(unknown.items()))
        raise DatasetProblem(
            f"{where} has {len(unknown)} words the tokenizer does not cover: {words}. Train with a tokenizer "
            "whose vocabulary includes them (hf_thought_cloning.vocabulary), or regenerate the dataset"
        )


def describe_error(error: BaseException) -> str:
    """``Type: message``, then each exception it was raised from or during, so no cause is lost."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current}" if str(current) else type(current).__name__)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return "; caused by ".join(parts)


def check_local_dataset(folder: Path) -> None:
    """Refuse a local folder whose shards differ from its manifest (``python -m dataset_builder validate``'s
    integrity part: every shard present, none foreign, the card reading all of them, checksums)."""
    from dataset_builder.validate import DatasetFolderError, integrity_problems

    try:
        problems = integrity_problems(folder)
    except DatasetFolderError as error:
        problems = [str(error)]
    if problems:
        raise DatasetProblem(
            f"{folder} does not hold the dataset its manifest describes: {'; '.join(problems)}. "
            f"Check it with `python -m dataset_builder validate {folder}`, then repair or regenerate it"
        )


def dataset_layout(dataset: str) -> dict[str, dict[str, str]] | None:
    """``{config: {split: glob}}`` from a local dataset folder's card (None for a Hub id); a local folder
    must first pass ``check_local_dataset``."""
    folder = Path(dataset)
    if not folder.is_dir():
        return None
    check_local_dataset(folder)
    card = folder / "README.md"
    if not card.is_file():
        raise DatasetProblem(f"{dataset} has no README.md: not a thought dataset folder (python -m dataset_builder generate)")
    configs = DatasetCard.load(card).data.to_dict().get("configs") or []
    layout = {c["config_name"]: {f["split"]: f["path"] for f in c.get("data_files", [])} for c in configs}
    if not layout:
        raise DatasetProblem(f"{card} declares no dataset configs: regenerate the folder with dataset_builder")
    return layout


def choose_level(dataset: str, config: str | None, option: str = "--dataset_config") -> tuple[dict | None, str]:
    """(``dataset_layout(dataset)``, the level): ``config``, or the dataset's only config when None. Raises
    DatasetProblem naming ``option`` when the level is missing or ambiguous."""
    layout = dataset_layout(dataset)
    configs = list(layout) if layout is not None else datasets.get_dataset_config_names(dataset)
    level = config or (configs[0] if len(configs) == 1 else None)
    if level is None or level not in configs:
        raise DatasetProblem(f"{option}: choose the level among {configs} (got {config!r})")
    return layout, level


def split_names(dataset: str, layout: dict | None, level: str) -> list[str]:
    """The splits of ``level`` (``layout`` from [`choose_level`]: a local folder's, or None for a Hub id)."""
    return list(layout[level]) if layout is not None else datasets.get_dataset_split_names(dataset, level)


def load_split(dataset: str, config: str, split: str) -> datasets.Dataset:
    """One split of a local folder (read straight from its Parquet shards) or of a Hub dataset.

    A local folder is read directly rather than through ``load_dataset``, whose cache can hand back the
    previous contents of a folder regenerated at the same path.
    """
    layout = dataset_layout(dataset)
    if layout is None:
        return datasets.load_dataset(dataset, config, split=split)
    if split not in layout.get(config, {}):
        raise DatasetProblem(f"{dataset} has no split {split!r} for {config!r} (it has {sorted(layout.get(config, {}))})")
    files = sorted(Path(dataset).glob(layout[config][split]))
    if not files:
        raise DatasetProblem(f"{dataset}: no Parquet shards match {layout[config][split]!r} ({config}/{split})")
    return datasets.Dataset(pa.concat_tables([read_parquet(path) for path in files]))


def _flat(column: pa.ChunkedArray) -> pa.Array:
    array = column.combine_chunks()
    return array.storage if isinstance(array, pa.ExtensionArray) else array


@dataclass
class EpisodeStore:
    """One split of a thought dataset in flat arrays."""

    seeds: np.ndarray  # (E,) int64
    offsets: np.ndarray  # (E + 1,) int64: episode e owns frames offsets[e]:offsets[e + 1]
    images: np.ndarray  # (F, 7, 7, 3) uint8
    actions: np.ndarray  # (F,) int64
    thought_index: np.ndarray  # (F,) int64 rows of thought_table
    thought_table: torch.LongTensor  # (U, L) word ids of the distinct thoughts
    mission_index: np.ndarray  # (E,) int64 rows of mission_table
    mission_table: torch.LongTensor  # (M, L) word ids of the distinct missions
    missions: list[str]  # distinct missions, in mission_table order
    thoughts: list[str]  # distinct thoughts, in thought_table order

    @classmethod
    def from_table(cls, table: pa.Table, processor: Any, where: str = "the dataset") -> EpisodeStore:
        check_columns(table.column_names, where)
        if table.num_rows == 0:
            raise DatasetProblem(f"{where} has no episodes")
        actions = _flat(table.column("actions"))
        offsets = actions.offsets.to_numpy().astype(np.int64)
        offsets = offsets - offsets[0]
        images = _flat(table.column("images"))
        for _ in range(4):
            images = images.flatten()
        images = images.to_numpy(zero_copy_only=False)
        frames = int(offsets[-1])
        if images.size != frames * 7 * 7 * 3:
            raise DatasetProblem(f"{where}: {images.size // 147} images for {frames} actions")
        thought_column = _flat(table.column("thoughts"))
        if len(thought_column.flatten()) != frames:
            raise DatasetProblem(f"{where}: {len(thought_column.flatten())} thoughts for {frames} actions")
        thoughts = pc.dictionary_encode(thought_column.flatten())
        missions = pc.dictionary_encode(_flat(table.column("mission")))
        thought_texts = thoughts.dictionary.to_pylist()
        mission_texts = missions.dictionary.to_pylist()
        check_vocabulary(processor.tokenizer, mission_texts, thought_texts, where)
        return cls(
            seeds=_flat(table.column("seed")).to_numpy().astype(np.int64),
            offsets=offsets,
            images=images.reshape(frames, 7, 7, 3),
            actions=actions.flatten().to_numpy().astype(np.int64),
            thought_index=thoughts.indices.to_numpy().astype(np.int64),
            thought_table=processor.encode_texts(thought_texts, "thought"),
            mission_index=missions.indices.to_numpy().astype(np.int64),
            mission_table=processor.encode_texts(mission_texts, "mission"),
            missions=mission_texts,
            thoughts=thought_texts,
        )

    @property
    def num_episodes(self) -> int:
        return len(self.seeds)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def num_frames(self) -> int:
        return int(self.offsets[-1])

    def collate(self, episodes: Sequence[int]) -> dict[str, torch.Tensor]:
        """Episodes -> the ``(B, T)`` model inputs of ``ThoughtCloningProcessor.collate_episodes``."""
        episodes = np.asarray(episodes, dtype=np.int64)
        starts, lengths = self.offsets[episodes], self.lengths[episodes]
        batch, steps = len(episodes), int(lengths.max())
        # Frame index of every (episode, step); padding steps read the episode's first frame, zeroed and masked.
        step_range = np.arange(steps)
        valid = step_range[None, :] < lengths[:, None]
        frame = np.where(valid, starts[:, None] + step_range[None, :], starts[:, None])
        actions = torch.from_numpy(np.where(valid, self.actions[frame], IGNORE_INDEX))
        thought_ids = self.thought_table[torch.from_numpy(self.thought_index[frame])]
        thought_ids = thought_ids.masked_fill(~torch.from_numpy(valid)[..., None], 0)
        episode_starts = torch.zeros(batch, steps, dtype=torch.bool)
        episode_starts[:, 0] = True
        return {
            "images": torch.from_numpy(self.images[frame] * valid[..., None, None, None].astype(np.uint8)).long(),
            "mission_input_ids": self.mission_table[torch.from_numpy(self.mission_index[episodes])],
            "thought_input_ids": thought_ids,
            "actions": actions,
            "episode_starts": episode_starts,
            "step_mask": torch.from_numpy(valid),
        }


def batch_order(
    lengths: np.ndarray, batch_size: int, seed: int, batch_number: int, group_by_length: bool = True
) -> np.ndarray:
    """Episode indices of global batch ``batch_number`` (0-based, counted across passes over the data).

    Pass ``p`` over the split is a permutation seeded by (seed, p), cut into ``ceil(E / batch_size)`` batches
    (the last one smaller, nothing dropped). With ``group_by_length`` the permutation is cut into mega-batches
    of 16 batches, each sorted by episode length before cutting, and the batches are shuffled again: batches
    of similar lengths waste less compute on padding while every episode is still seen once per pass.
    """
    count = len(lengths)
    batches_per_pass = -(-count // batch_size)
    pass_number, position = divmod(batch_number, batches_per_pass)
    rng = np.random.default_rng([seed, pass_number])
    order = rng.permutation(count)
    if group_by_length:
        mega = batch_size * 16
        chunks = [order[i : i + mega] for i in range(0, count, mega)]
        order = np.concatenate([chunk[np.argsort(-lengths[chunk], kind="stable")] for chunk in chunks])
        batches = [order[i : i + batch_size] for i in range(0, count, batch_size)]
        return batches[rng.permutation(len(batches))[position]]
    return order[position * batch_size : (position + 1) * batch_size]


def shard_for_process(episodes: np.ndarray, process_index: int, num_processes: int) -> np.ndarray:
    """This process's share of a global batch (every process gets at least one episode when it can)."""
    return episodes[process_index::num_processes]


def streaming_batches(
    dataset: Any, processor: Any, batch_size: int, where: str
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches from a streaming (``IterableDataset``) split: rows are collated as they arrive; the words of each
    batch are checked against the tokenizer (a streamed split cannot be scanned before training)."""
    rows: list[Mapping[str, Any]] = []
    for row in dataset:
        rows.append(row)
        if len(rows) == batch_size:
            yield _streamed_batch(rows, processor, where)
            rows = []
    if rows:
        yield _streamed_batch(rows, processor, where)


def _streamed_batch(rows: list[Mapping[str, Any]], processor: Any, where: str) -> dict[str, torch.Tensor]:
    check_columns(rows[0].keys(), where)
    check_vocabulary(
        processor.tokenizer, {row["mission"] for row in rows}, {t for row in rows for t in row["thoughts"]}, where
    )
    return dict(processor.collate_episodes(rows))
