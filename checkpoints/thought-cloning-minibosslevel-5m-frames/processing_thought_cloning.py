"""Turns gymnasium observations and dataset rows into [`ThoughtCloningModel`] inputs.

* ``processor(observations)``: one step of one or ``N`` environments (a gymnasium observation dict, a list
  of them, or a vector env's batched dict) -> ``images`` (N, 7, 7, 3) and ``mission_input_ids`` (N, L),
  plus ``thought_input_ids`` (N, L) when ``thoughts`` are given (an injected thought, for steering).
* ``processor.collate_episodes(rows)``: dataset rows (dicts with the dataset schema) or ``Episode`` objects
  -> ``(B, T)`` training sequences; ``processor.windows(batch, length)`` cuts them for truncated BPTT.

* ``VLMThoughtPrompter``: the inputs of a VLM upper level (a rendering of the view, a prompt with the mission
  and the previous thought, the target thought) in the VLM's own tokenizer and image processor.

Unknown-word policy: by default (``unknown_words="error"``) a mission or thought with a word outside the
vocabulary raises ``ValueError``; with ``unknown_words="unk"`` such words become `<unk>` (id 3).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin

__all__ = ["ThoughtCloningProcessor", "VLMThoughtPrompter"]

UNKNOWN_WORD_POLICIES = ("error", "unk")
IGNORE_INDEX = -100
TEXT_CACHE_SIZE = 65_536  # distinct texts remembered by encode_texts (missions and thoughts)
DEFAULT_VLM_TEMPLATE = "Mission : {mission} Previous : {previous} Thought :"
PROMPTER_FILE = "prompter_config.json"
PROMPTER_FORMAT = "hf-thought-cloning/vlm-prompter"


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
        # Rollouts encode the same missions at every step: each text is tokenized once per processor.
        self._encoded_texts: dict[str, tuple[list[int], list[str]]] = {}
        super().__init__(tokenizer, **kwargs)

    # ------------------------------------------------------------------------------------------- text
    def encode_texts(self, texts: Sequence[str], kind: str = "text") -> torch.LongTensor:
        """Word ids (N, L), padded with 0, each distinct string tokenized once; no bos/eos."""
        distinct = list(dict.fromkeys(texts))
        cache = self._encoded_texts
        new = [text for text in distinct if text not in cache]
        if new:
            if len(cache) + len(new) > TEXT_CACHE_SIZE:
                cache.clear()
            encoded = self.tokenizer(new, add_special_tokens=False)["input_ids"]
            cache.update((text, (ids, self.tokenizer.unknown_words(text))) for text, ids in zip(new, encoded, strict=True))
        if self.unknown_words == "error":
            for text in distinct:
                unknown = cache[text][1]
                if unknown:
                    raise ValueError(
                        f"{kind} {text!r} has words outside the vocabulary: {unknown} "
                        "(use ThoughtCloningProcessor(unknown_words='unk') to map them to <unk>)"
                    )
        encoded = [cache[text][0] for text in distinct]
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
    """Prompts and targets of a vision-language Thought Generator, in the VLM's own tokenizer and image processor.

    The VLM sees the agent's 7x7 view rendered by minigrid (``tile_size`` pixels a cell; its image processor
    resizes the rendering), then ``template`` filled with the mission and the previous thought (wrapped as a user
    turn by the tokenizer's chat template with ``use_chat_template``); it writes ``target_prefix`` + the thought,
    then its eos token. Where the image goes, the prompt holds the image tokens of the VLM's family
    (``IMAGE_LAYOUTS``: LLaVA, Idefics3/SmolVLM with image splitting off, Qwen2-VL and Qwen2.5-VL).

    ``save_pretrained``/``from_pretrained`` keep the tokenizer, the image processor and these settings together
    (a model folder's ``vlm_prompter/``), so a saved agent rebuilds its prompter.

    Args:
        tokenizer: the VLM's tokenizer (needs pad and eos tokens).
        image_processor: the VLM's image processor.
        vlm_config: the VLM's config (its ``model_type`` picks the image layout).
        tile_size: pixels per cell of the rendering.
        template: the prompt's text, with ``{mission}`` and ``{previous}``.
        use_chat_template: wrap the prompt in the tokenizer's chat template (instruction-tuned VLMs).
        target_prefix: text before the thought in the target (a space for BPE tokenizers, which write one).
    """

    def __init__(
        self,
        tokenizer: Any,
        image_processor: Any,
        vlm_config: Any,
        tile_size: int = 8,
        template: str = DEFAULT_VLM_TEMPLATE,
        use_chat_template: bool = False,
        target_prefix: str = " ",
    ):
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("the VLM tokenizer needs pad and eos tokens")
        if vlm_config.model_type not in IMAGE_LAYOUTS:
            raise ValueError(
                f"VLMs of type {vlm_config.model_type!r} are not supported as the Thought Generator (supported: "
                f"{sorted(IMAGE_LAYOUTS)}): their image tokens are laid out differently"
            )
        if use_chat_template and not tokenizer.chat_template:
            raise ValueError("use_chat_template=True, but the VLM tokenizer has no chat template")
        for key in ("mission", "previous"):
            if "{" + key + "}" not in template:
                raise ValueError(f"the prompt template needs a {{{key}}} field, got {template!r}")
        self.tokenizer, self.image_processor, self.vlm_config = tokenizer, image_processor, vlm_config
        self.layout = IMAGE_LAYOUTS[vlm_config.model_type](tokenizer, image_processor, vlm_config)
        self.tile_size, self.template = tile_size, template
        self.use_chat_template, self.target_prefix = use_chat_template, target_prefix

    # ------------------------------------------------------------------------------------ files
    def settings(self) -> dict[str, Any]:
        return {"tile_size": self.tile_size, "template": self.template, "use_chat_template": self.use_chat_template,
                "target_prefix": self.target_prefix}  # fmt: skip

    @classmethod
    def from_vlm(cls, vlm_name_or_path: str, vlm_config: Any = None, **settings: Any) -> VLMThoughtPrompter:
        """The prompter of the pretrained VLM at ``vlm_name_or_path`` (its tokenizer and image processor)."""
        from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

        vlm_config = vlm_config or AutoConfig.from_pretrained(vlm_name_or_path, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(vlm_name_or_path, trust_remote_code=False)
        if not tokenizer.chat_template:
            tokenizer.chat_template = _processor_chat_template(vlm_name_or_path)
        image_processor = AutoImageProcessor.from_pretrained(vlm_name_or_path, trust_remote_code=False)
        return cls(tokenizer, image_processor, vlm_config, **settings)

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.tokenizer.save_pretrained(folder)
        self.image_processor.save_pretrained(folder)
        text = json.dumps({"format": PROMPTER_FORMAT, **self.settings()}, indent=1) + "\n"
        (folder / PROMPTER_FILE).write_text(text, encoding="utf-8")

    @classmethod
    def from_pretrained(
        cls, name_or_path: str, vlm_config: Any, subfolder: str = "", missing_ok: bool = False, **hub_kwargs: Any
    ) -> VLMThoughtPrompter | None:
        """The prompter saved by ``save_pretrained`` (in ``subfolder``); None when there is none and ``missing_ok``."""
        from transformers import AutoImageProcessor, AutoTokenizer
        from transformers.utils import cached_file

        found = cached_file(name_or_path, PROMPTER_FILE, subfolder=subfolder, _raise_exceptions_for_missing_entries=False,
                            **hub_kwargs)  # fmt: skip
        if found is None:
            if missing_ok:
                return None
            raise ValueError(f"{name_or_path} holds no VLM prompter ({Path(subfolder) / PROMPTER_FILE})")
        settings = json.loads(Path(found).read_text(encoding="utf-8"))
        if settings.pop("format", None) != PROMPTER_FORMAT:
            raise ValueError(f"{found} is not a VLM prompter's settings file")
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, subfolder=subfolder, trust_remote_code=False, **hub_kwargs)
        image_processor = AutoImageProcessor.from_pretrained(name_or_path, subfolder=subfolder, trust_remote_code=False,
                                                             **hub_kwargs)  # fmt: skip
        return cls(tokenizer, image_processor, vlm_config, **settings)

    # ---------------------------------------------------------------------------------- prompts
    def render(self, images: torch.Tensor | np.ndarray) -> list[np.ndarray]:
        """(N, 7, 7, 3) symbolic views -> N RGB renderings (uint8, 7 * tile_size pixels a side)."""
        from minigrid.core.grid import Grid  # only the VLM path needs minigrid's renderer

        renders = []
        for view in np.asarray(images.cpu() if isinstance(images, torch.Tensor) else images, dtype=np.uint8):
            grid, _ = Grid.decode(view)
            # The agent sits at the bottom centre of its own view, facing up.
            renders.append(grid.render(self.tile_size, agent_pos=(3, 6), agent_dir=3))
        return renders

    def prompt_text(self, mission: str, previous: str) -> str:
        """The prompt with the family's image placeholder (expanded into image tokens by ``_prompt_ids``)."""
        text = self.template.format(mission=mission, previous=previous)
        if not self.use_chat_template:
            return self.layout.placeholder + text
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _prompt_ids(self, mission: str, previous: str, pixels: Mapping[str, torch.Tensor], row: int) -> list[int]:
        text = self.prompt_text(mission, previous)
        if text.count(self.layout.placeholder) != 1:
            raise ValueError(f"the prompt must hold the image placeholder {self.layout.placeholder!r} once: {text!r}")
        text = text.replace(self.layout.placeholder, self.layout.image_tokens(pixels, row))
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _target_ids(self, thought: str) -> list[int]:
        ids = self.tokenizer(self.target_prefix + thought, add_special_tokens=False)["input_ids"]
        return ids + [self.tokenizer.eos_token_id]

    def generation_inputs(
        self, images: torch.Tensor | np.ndarray, missions: Sequence[str], previous_thoughts: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        """Left-padded prompts for greedy generation: ``input_ids``, ``attention_mask`` and the family's image
        inputs (``pixel_values``, ...)."""
        pixels = self.layout.pixel_inputs(self.render(images))
        prompts = [self._prompt_ids(m, p, pixels, row)
                   for row, (m, p) in enumerate(zip(missions, previous_thoughts, strict=True))]  # fmt: skip
        width = max(map(len, prompts))
        input_ids = torch.full((len(prompts), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros(len(prompts), width, dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, **pixels,
                **self.layout.token_inputs(input_ids)}  # fmt: skip

    def generation_settings(self) -> dict[str, int]:
        return {"eos_token_id": self.tokenizer.eos_token_id, "pad_token_id": self.tokenizer.pad_token_id}

    def step_inputs(
        self, views: np.ndarray | torch.Tensor, missions: Sequence[str], previous: Sequence[str], thoughts: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        """Teacher-forcing inputs of N steps (a view, mission, previous and target thought each), right-padded:
        ``vlm_input_ids``, ``vlm_attention_mask``, ``vlm_labels`` (-100 but on the target thought and its eos) and
        the family's image inputs, all prefixed ``vlm_``."""
        if not len(thoughts):
            raise ValueError("no steps to build VLM inputs for")
        pixels = self.layout.pixel_inputs(self.render(views))
        rows = [(self._prompt_ids(m, p, pixels, row), self._target_ids(t))
                for row, (m, p, t) in enumerate(zip(missions, previous, thoughts, strict=True))]  # fmt: skip
        width = max(len(p) + len(t) for p, t in rows)
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros(len(rows), width, dtype=torch.long)
        for row, (prompt, target) in enumerate(rows):
            ids = prompt + target
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
            labels[row, len(prompt) : len(ids)] = torch.tensor(target)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, **pixels,
                  **self.layout.token_inputs(input_ids), "labels": labels}  # fmt: skip
        return {f"vlm_{name}": value for name, value in inputs.items()}

    def training_inputs(
        self, episodes: Sequence[Mapping[str, Any] | Any], start: int = 0, length: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Teacher-forcing inputs for steps ``[start, start + length)`` of each episode, in the (episode, step)
        order of the valid steps of ``ThoughtCloningProcessor.collate_episodes`` (and its ``windows``)."""
        views, missions, previous, thoughts = [], [], [], []
        for episode in map(_episode_fields, episodes):
            episode_thoughts = list(episode["thoughts"])
            stop = len(episode_thoughts) if length is None else min(len(episode_thoughts), start + length)
            for t in range(start, stop):
                views.append(np.asarray(episode["images"][t]))
                missions.append(episode["mission"])
                previous.append(episode_thoughts[t - 1] if t > 0 else "")
                thoughts.append(episode_thoughts[t])
        return self.step_inputs(np.stack(views), missions, previous, thoughts)

    def window_inputs(
        self, batch: Mapping[str, torch.Tensor], start: int, length: int, ids_to_text: Any
    ) -> dict[str, torch.Tensor]:
        """Teacher-forcing inputs of steps ``[start, start + length)`` of collated ``(B, T)`` sequences (the valid
        ones, in (b, t) order: what ``forward`` takes with ``processor.windows(batch, length)``'s window).
        ``ids_to_text`` turns word ids (N, L) into strings (``ThoughtCloningModel.ids_to_text``)."""
        step_mask, episode_starts = batch["step_mask"].cpu(), batch["episode_starts"].cpu()
        batch_size, steps = step_mask.shape
        missions = ids_to_text(batch["mission_input_ids"].cpu())
        thoughts = ids_to_text(batch["thought_input_ids"].cpu().flatten(0, 1))
        views, row_missions, previous, targets = [], [], [], []
        for b in range(batch_size):
            for t in range(start, min(steps, start + length)):
                if not step_mask[b, t]:
                    continue
                views.append(batch["images"][b, t].cpu().numpy())
                row_missions.append(missions[b])
                previous.append("" if t == 0 or episode_starts[b, t] else thoughts[b * steps + t - 1])
                targets.append(thoughts[b * steps + t])
        if not targets:
            raise ValueError(f"steps [{start}, {start + length}) hold no valid step")
        return self.step_inputs(np.stack(views), row_missions, previous, targets)

    def decode(self, generated_ids: torch.LongTensor) -> list[str]:
        """The VLM's generated tokens -> thought strings (up to its eos)."""
        texts = self.tokenizer.batch_decode(generated_ids, skip_special_tokens=True)
        return [" ".join(text.replace(",", " , ").split()).replace(" ,", ",") for text in texts]


def _processor_chat_template(name_or_path: str) -> str | None:
    """The chat template that a VLM repo keeps beside its processor (``chat_template.jinja`` or ``.json``)."""
    from transformers.utils import cached_file

    for name in ("chat_template.jinja", "chat_template.json"):
        found = cached_file(name_or_path, name, _raise_exceptions_for_missing_entries=False)
        if found is not None:
            text = Path(found).read_text(encoding="utf-8")
            return json.loads(text)["chat_template"] if name.endswith(".json") else text
    return None


# --------------------------------------------------------------------------------- image layouts
class _ImageLayout:
    """Where a VLM family's image goes in a prompt: ``placeholder`` (what a template or chat template writes)
    becomes ``image_tokens``; ``pixel_inputs`` runs the image processor; ``token_inputs`` adds per-token inputs."""

    placeholder = "<image>"

    def __init__(self, tokenizer: Any, image_processor: Any, vlm_config: Any):
        self.tokenizer, self.image_processor, self.vlm_config = tokenizer, image_processor, vlm_config

    def pixel_inputs(self, renders: list[np.ndarray]) -> dict[str, torch.Tensor]:
        return dict(self.image_processor(images=renders, return_tensors="pt"))

    def image_tokens(self, pixels: Mapping[str, torch.Tensor], row: int) -> str:
        raise NotImplementedError

    def token_inputs(self, input_ids: torch.LongTensor) -> dict[str, torch.Tensor]:
        return {}


class _LlavaLayout(_ImageLayout):
    """LLaVA: one image token per vision feature (patches, plus CLS with the "full" feature strategy)."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        vision = self.vlm_config.vision_config
        self.placeholder = self.tokenizer.convert_ids_to_tokens(self.vlm_config.image_token_id)
        extra = 1 if self.vlm_config.vision_feature_select_strategy == "full" else 0
        self.count = (vision.image_size // vision.patch_size) ** 2 + extra

    def image_tokens(self, pixels: Mapping[str, torch.Tensor], row: int) -> str:
        return self.placeholder * self.count


class _Idefics3Layout(_ImageLayout):
    """Idefics3 / SmolVLM with image splitting off (a 7x7-cell view needs no tiles): the whole image resized to
    the vision tower's size, ``(image_size / patch_size)^2 / scale_factor^2`` image tokens between markers."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        vision = self.vlm_config.vision_config
        self.size = vision.image_size
        self.count = (vision.image_size // vision.patch_size) ** 2 // self.vlm_config.scale_factor**2

    def pixel_inputs(self, renders: list[np.ndarray]) -> dict[str, torch.Tensor]:
        size = {"longest_edge": self.size}
        return dict(self.image_processor(images=[[render] for render in renders], do_image_splitting=False, size=size,
                                         max_image_size=size, return_tensors="pt"))  # fmt: skip

    def image_tokens(self, pixels: Mapping[str, torch.Tensor], row: int) -> str:
        return "<fake_token_around_image><global-img>" + "<image>" * self.count + "<fake_token_around_image>"


class _Qwen2VLLayout(_ImageLayout):
    """Qwen2-VL / Qwen2.5-VL: ``grid_t * grid_h * grid_w / merge_size^2`` image pads between vision markers, and
    ``mm_token_type_ids`` (1 on image tokens), which transformers 5 needs to place M-RoPE positions."""

    placeholder = "<|vision_start|><|image_pad|><|vision_end|>"

    def image_tokens(self, pixels: Mapping[str, torch.Tensor], row: int) -> str:
        count = int(pixels["image_grid_thw"][row].prod()) // self.image_processor.merge_size**2
        return "<|vision_start|>" + "<|image_pad|>" * count + "<|vision_end|>"

    def token_inputs(self, input_ids: torch.LongTensor) -> dict[str, torch.Tensor]:
        return {"mm_token_type_ids": (input_ids == self.vlm_config.image_token_id).long()}


# VLM families (config model_type) whose prompts the prompter can lay out.
IMAGE_LAYOUTS: dict[str, type[_ImageLayout]] = {
    "llava": _LlavaLayout,
    "idefics3": _Idefics3Layout,
    "smolvlm": _Idefics3Layout,
    "qwen2_vl": _Qwen2VLLayout,
    "qwen2_5_vl": _Qwen2VLLayout,
}


def _episode_fields(episode: Mapping[str, Any] | Any) -> Mapping[str, Any]:
    if isinstance(episode, Mapping):
        return episode
    return {name: getattr(episode, name) for name in ("mission", "images", "actions", "thoughts")}
