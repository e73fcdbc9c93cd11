"""Turns gymnasium observations and dataset rows into [`ThoughtCloningModel`] inputs.

* ``processor(observations)``: one step of one or ``N`` environments (a gymnasium observation dict, a list
  of them, or a vector env's batched dict) -> ``images`` (N, 7, 7, 3) and ``mission_input_ids`` (N, L),
  plus ``thought_input_ids`` (N, L) when ``thoughts`` are given (an injected thought, for steering).
* ``processor.collate_episodes(rows)``: dataset rows (dicts with the dataset schema) or ``Episode`` objects
  -> ``(B, T)`` training sequences; ``processor.windows(batch, length)`` cuts them for truncated BPTT.

* ``VLMThoughtPrompter``: the inputs of a VLM upper level (a rendering of the view, a prompt with the mission
  and the previous thought, the target thought) in the VLM's own tokenizer.

Unknown-word policy: by default (``unknown_words="error"``) a mission or thought with a word outside the
vocabulary raises ``ValueError``; with ``unknown_words="unk"`` such words become `<unk>` (id 3).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin

__all__ = ["ThoughtCloningProcessor", "VLMThoughtPrompter"]

UNKNOWN_WORD_POLICIES = ("error", "unk")
IGNORE_INDEX = -100


class ThoughtCloningProcessor(ProcessorMixin):
    """Wraps a [`ThoughtCloningTokenizer`]; see the module docstring for the accepted inputs.

    Args:
        tokenizer ([`ThoughtCloningTokenizer`]): the word-level tokenizer.
        unknown_words (`str`, defaults to "error"): "error" raises on out-of-vocabulary words, "unk" maps them
            to `<unk>`.
    """

    tokenizer_class = "AutoTokenizer"

    def __init__(self, tokenizer: Any = None, unknown_words: str = "error", **kwargs: Any):
        if unknown_words not in UNKNOWN_WORD_POLICIES:
            raise ValueError(f"unknown_words must be one of {UNKNOWN_WORD_POLICIES}, got {unknown_words!r}")
        self.unknown_words = unknown_words
        super().__init__(tokenizer, **kwargs)

    # ------------------------------------------------------------------------------------------- text
    def encode_texts(self, texts: Sequence[str], kind: str = "text") -> torch.LongTensor:
        """Word ids (N, L), padded with 0, each distinct string tokenized once; no bos/eos."""
        distinct = list(dict.fromkeys(texts))
        if self.unknown_words == "error":
            for text in distinct:
                unknown = self.tokenizer.unknown_words(text)
                if unknown:
                    raise ValueError(
                        f"{kind} {text!r} has words outside the vocabulary: {unknown} "
                        "(use ThoughtCloningProcessor(unknown_words='unk') to map them to <unk>)"
                    )
        encoded = self.tokenizer(distinct, add_special_tokens=False)["input_ids"]
        width = max([1, *map(len, encoded)])
        table = torch.zeros(len(distinct), width, dtype=torch.long)
        for row, ids in enumerate(encoded):
            table[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        position = {text: row for row, text in enumerate(distinct)}
        return table[torch.tensor([position[text] for text in texts], dtype=torch.long)]

    def decode_thoughts(self, thought_ids: torch.LongTensor) -> list[str]:
        """Word ids (N, L) -> thought strings (special tokens dropped)."""
        return [text.replace(" ,", ",") for text in self.tokenizer.batch_decode(thought_ids, skip_special_tokens=True)]

    # ----------------------------------------------------------------------------------- observations
    def __call__(
        self,
        observations: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        thoughts: Sequence[str] | str | None = None,
        missions: Sequence[str] | str | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """One step of one or N environments -> ``images`` (N, 7, 7, 3), ``mission_input_ids`` (N, L) and,
        with ``thoughts``, ``thought_input_ids`` (N, L). ``missions`` overrides the observations' missions."""
        if kwargs:
            raise TypeError(f"unexpected arguments: {sorted(kwargs)}")
        if isinstance(observations, Mapping):
            images = np.asarray(observations["image"])
            single = images.ndim == 3
            images = images[None] if single else images
            observed_missions = observations.get("mission")
            observed_missions = [observed_missions] if isinstance(observed_missions, str) else observed_missions
        else:
            images = np.stack([np.asarray(observation["image"]) for observation in observations])
            observed_missions = [observation.get("mission") for observation in observations]
        if images.ndim != 4 or images.shape[1:] != (7, 7, 3):
            raise ValueError(f"observation images must be (7, 7, 3) or (N, 7, 7, 3), got {images.shape}")
        count = images.shape[0]
        missions = [missions] * count if isinstance(missions, str) else missions
        missions = list(missions if missions is not None else observed_missions or [])
        if len(missions) != count or any(not isinstance(m, str) for m in missions):
            raise ValueError(f"need one mission string per environment ({count}), got {missions!r}")
        features = {
            "images": torch.as_tensor(images.astype(np.int64)),
            "mission_input_ids": self.encode_texts(missions, "mission"),
        }
        if thoughts is not None:
            thoughts = [thoughts] * count if isinstance(thoughts, str) else list(thoughts)
            if len(thoughts) != count:
                raise ValueError(f"{len(thoughts)} thoughts for {count} environments")
            features["thought_input_ids"] = self.encode_texts(thoughts, "thought")
        return BatchFeature(features)

    # --------------------------------------------------------------------------------------- episodes
    def collate_episodes(self, episodes: Sequence[Mapping[str, Any] | Any]) -> BatchFeature:
        """Episodes (dataset rows or ``Episode`` objects) -> ``(B, T)`` sequences, T the longest episode.

        Returns ``images`` (B, T, 7, 7, 3), ``mission_input_ids`` (B, L), ``thought_input_ids`` (B, T, L),
        ``actions`` (B, T) with -100 after an episode's end, ``episode_starts`` (B, T) and ``step_mask`` (B, T).
        """
        if not episodes:
            raise ValueError("collate_episodes needs at least one episode")
        fields = [_episode_fields(episode) for episode in episodes]
        batch, steps = len(fields), max(len(f["actions"]) for f in fields)
        images = torch.zeros(batch, steps, 7, 7, 3, dtype=torch.long)
        actions = torch.full((batch, steps), IGNORE_INDEX, dtype=torch.long)
        step_mask = torch.zeros(batch, steps, dtype=torch.bool)
        all_thoughts: list[str] = []
        for row, f in enumerate(fields):
            length = len(f["actions"])
            frames = np.asarray(f["images"])
            if frames.shape != (length, 7, 7, 3) or len(f["thoughts"]) != length:
                raise ValueError(
                    f"episode {row}: images {frames.shape}, {len(f['thoughts'])} thoughts and {length} actions disagree"
                )
            images[row, :length] = torch.as_tensor(frames.astype(np.int64))
            actions[row, :length] = torch.as_tensor(np.asarray(f["actions"], dtype=np.int64))
            step_mask[row, :length] = True
            all_thoughts.extend(list(f["thoughts"]) + [""] * (steps - length))
        episode_starts = torch.zeros(batch, steps, dtype=torch.bool)
        episode_starts[:, 0] = True
        return BatchFeature({
            "images": images,
            "mission_input_ids": self.encode_texts([f["mission"] for f in fields], "mission"),
            "thought_input_ids": self.encode_texts(all_thoughts, "thought").view(batch, steps, -1),
            "actions": actions,
            "episode_starts": episode_starts,
            "step_mask": step_mask,
        })

    @staticmethod
    def windows(batch: Mapping[str, torch.Tensor], length: int) -> Iterator[dict[str, torch.Tensor]]:
        """Cut collated sequences into consecutive windows of ``length`` steps for truncated BPTT (carry the
        model's output ``memory`` from one window to the next; ``episode_starts`` is only set where it was)."""
        steps = batch["images"].shape[1]
        for start in range(0, steps, length):
            window = {key: value for key, value in batch.items()}
            for key in ("images", "thought_input_ids", "actions", "episode_starts", "step_mask"):
                if key in batch:
                    window[key] = batch[key][:, start : start + length]
            yield window


class VLMThoughtPrompter:
    """Prompts and targets for a LLaVA-style image-text-to-text Thought Generator, in the VLM's tokenizer.

    The VLM sees the agent's 7x7 view rendered by minigrid (``tile_size`` pixels a cell, resized to
    ``image_size``), then ``template`` filled with the mission and the previous thought; it writes the thought
    followed by its eos token. Images take ``image_seq_length`` copies of ``image_token_id`` (the LLaVA
    convention: one token per image feature), so no image processor is needed.

    Args:
        tokenizer: the VLM's tokenizer (needs pad and eos tokens).
        image_token_id, image_seq_length, image_size: from the VLM's config (see ``for_llava``).
        image_mean, image_std: the VLM's pixel normalisation.
    """

    def __init__(
        self,
        tokenizer: Any,
        image_token_id: int,
        image_seq_length: int,
        image_size: int,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        tile_size: int = 8,
        template: str = "Mission : {mission} Previous : {previous} Thought :",
    ):
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("the VLM tokenizer needs pad and eos tokens")
        self.tokenizer = tokenizer
        self.image_token_id, self.image_seq_length, self.image_size = image_token_id, image_seq_length, image_size
        self.image_mean = torch.tensor(image_mean, dtype=torch.float32)[:, None, None]
        self.image_std = torch.tensor(image_std, dtype=torch.float32)[:, None, None]
        self.tile_size, self.template = tile_size, template

    @classmethod
    def for_llava(cls, tokenizer: Any, vlm_config: Any, **kwargs: Any) -> VLMThoughtPrompter:
        """Settings read from a LLaVA-family config (``image_token_id``, ``image_seq_length``, vision size)."""
        return cls(
            tokenizer,
            image_token_id=vlm_config.image_token_id,
            image_seq_length=vlm_config.image_seq_length,
            image_size=vlm_config.vision_config.image_size,
            **kwargs,
        )

    def pixel_values(self, images: torch.Tensor | np.ndarray) -> torch.FloatTensor:
        """(N, 7, 7, 3) symbolic views -> (N, 3, image_size, image_size) normalised renderings."""
        from minigrid.core.grid import Grid  # only the VLM path needs minigrid's renderer

        renders = []
        for view in np.asarray(images, dtype=np.uint8):
            grid, _ = Grid.decode(view)
            # The agent sits at the bottom centre of its own view, facing up.
            renders.append(grid.render(self.tile_size, agent_pos=(3, 6), agent_dir=3))
        pixels = torch.as_tensor(np.stack(renders)).permute(0, 3, 1, 2).float() / 255.0
        pixels = torch.nn.functional.interpolate(pixels, size=(self.image_size, self.image_size), mode="bilinear")
        return (pixels - self.image_mean) / self.image_std

    def _prompt_ids(self, mission: str, previous: str) -> list[int]:
        text = self.template.format(mission=mission, previous=previous)
        return [self.image_token_id] * self.image_seq_length + self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def generation_inputs(
        self, images: torch.Tensor | np.ndarray, missions: Sequence[str], previous_thoughts: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        """Left-padded prompts for greedy generation: ``input_ids``, ``attention_mask``, ``pixel_values``."""
        prompts = [self._prompt_ids(m, p) for m, p in zip(missions, previous_thoughts, strict=True)]
        width = max(map(len, prompts))
        input_ids = torch.full((len(prompts), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros(len(prompts), width, dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": self.pixel_values(images)}

    def training_inputs(
        self, episodes: Sequence[Mapping[str, Any] | Any], start: int = 0, length: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Teacher-forcing inputs for steps ``[start, start + length)`` of each episode, in the (episode, step)
        order of the valid steps of ``ThoughtCloningProcessor.collate_episodes`` (and its ``windows``)."""
        rows, views = [], []
        for episode in map(_episode_fields, episodes):
            thoughts = list(episode["thoughts"])
            stop = len(thoughts) if length is None else min(len(thoughts), start + length)
            for t in range(start, stop):
                previous = thoughts[t - 1] if t > 0 else ""
                prompt = self._prompt_ids(episode["mission"], previous)
                target = self.tokenizer(thoughts[t], add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
                rows.append((prompt, target))
                views.append(np.asarray(episode["images"][t]))
        width = max(len(p) + len(t) for p, t in rows)
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros(len(rows), width, dtype=torch.long)
        for row, (prompt, target) in enumerate(rows):
            ids = prompt + target
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
            labels[row, len(prompt) : len(ids)] = torch.tensor(target)
        return {
            "vlm_input_ids": input_ids,
            "vlm_attention_mask": attention_mask,
            "vlm_pixel_values": self.pixel_values(np.stack(views)),
            "vlm_labels": labels,
        }

    def decode(self, generated_ids: torch.LongTensor) -> list[str]:
        """The VLM's generated tokens -> thought strings (up to its eos)."""
        texts = self.tokenizer.batch_decode(generated_ids, skip_special_tokens=True)
        return [" ".join(text.replace(",", " , ").split()).replace(" ,", ",") for text in texts]


def _episode_fields(episode: Mapping[str, Any] | Any) -> Mapping[str, Any]:
    if isinstance(episode, Mapping):
        return episode
    return {name: getattr(episode, name) for name in ("mission", "images", "actions", "thoughts")}
