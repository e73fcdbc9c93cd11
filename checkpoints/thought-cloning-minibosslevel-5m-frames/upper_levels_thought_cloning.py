"""Swappable upper levels (Thought Generators) of the Thought Cloning agent, behind one small interface.

[`ThoughtCloningModel`] composes three components, chosen once from the config:

* a **text reader** (what the levels read of words): the paper's bidirectional GRUs over our word embeddings
  ([`WordReader`]), or a pretrained ``AutoModel`` encoder ([`PretrainedEncoderReader`]);
* a **thought channel** (how a written thought reaches the lower level and the next step's thought history):
  its greedy words ([`WordsChannel`]), or their soft words ([`SoftWordsChannel`], the no-thought-supervision
  ablation);
* an **upper level** ([`UpperLevel`], the interface): [`PaperThoughtGenerator`], [`TextEncoderThoughtGenerator`],
  [`VLMThoughtGenerator`] or [`NoThoughtGenerator`] (BC).

An upper level says what it reads (its text reader), which memory it carries (``initial_memory``), how it
steps that memory and writes a thought greedily when acting (``write``), what it does over a training
sequence (``sequence``: a [`ThoughtSequence`] stepped once per time step, teacher-forced or not), its
teacher-forced loss (``thought_nll``) and how an injected thought replaces its own (``inject``). The modules it
owns are registered on the model under their historical names (``thought_generator``, ``vlm``, ...), so the
weights of every model folder keep their keys. Adding an upper level: see docs/MODEL.md.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoModelForImageTextToText

from .configuration_thought_cloning import ThoughtCloningConfig
from .layers_thought_cloning import (
    IGNORE_INDEX,
    BiGRUTextEncoder,
    PretrainedTextEncoder,
    ThoughtCloningMemory,
    ThoughtGenerator,
    pad_positions,
    pad_to_width,
    thought_targets,
    trim_padding,
)

Features = tuple[torch.FloatTensor, torch.BoolTensor]  # per-token features (N, L, D) and their mask (N, L)


# ------------------------------------------------------------------------------------------- words
class WordVocabulary:
    """Our word vocabulary: thoughts as text <-> word ids (N, L), padded with 0."""

    def __init__(self, config: ThoughtCloningConfig):
        self.words = list(config.vocabulary)
        self.index = {word: i for i, word in enumerate(self.words)}
        self.unk_id = config.unk_token_id
        self.special = {config.pad_token_id, config.bos_token_id, config.eos_token_id}

    def to_ids(self, texts: Sequence[str], unknown_words: str = "error") -> torch.LongTensor:
        """A word outside the vocabulary raises ValueError, or becomes `<unk>` with ``unknown_words="unk"``."""
        rows = []
        for text in texts:
            words = text.replace(",", " , ").split()
            unknown = [word for word in words if word not in self.index]
            if unknown and unknown_words == "error":
                raise ValueError(f"thought {text!r} has words outside the vocabulary: {unknown}")
            rows.append([self.index.get(word, self.unk_id) for word in words])
        ids = torch.zeros(len(rows), max([1, *map(len, rows)]), dtype=torch.long)
        for row, words in enumerate(rows):
            ids[row, : len(words)] = torch.tensor(words, dtype=torch.long)
        return ids

    def to_text(self, ids: torch.LongTensor) -> list[str]:
        """Special tokens are dropped."""
        return [
            " ".join(self.words[i] for i in row if i not in self.special).replace(" ,", ",")
            for row in ids.tolist()
        ]


def bos_rows(config: ThoughtCloningConfig, rows: int, device: torch.device | str) -> torch.LongTensor:
    """`<bos>` alone, the previous thought at an episode start: (rows, 1)."""
    return torch.full((rows, 1), config.bos_token_id, dtype=torch.long, device=device)


# ------------------------------------------------------------------------------------- text readers
class TextReader:
    """What both levels read of missions and thoughts: word ids (N, L) -> per-token features and mask.

    ``modules`` are registered on the model under these names (in this order)."""

    modules: dict[str, nn.Module]

    def __init__(self, config: ThoughtCloningConfig):
        self.config = config

    def encode_ids(self, ids: torch.LongTensor, kind: str) -> Features:
        raise NotImplementedError

    def encode_embeddings(self, embeddings: torch.FloatTensor, mask: torch.BoolTensor, kind: str) -> Features:
        raise NotImplementedError(f"{type(self).__name__} reads word ids, not embeddings")

    def encode(self, ids: torch.LongTensor, kind: str) -> Features:
        """(N, L) word ids -> per-token features (N, L', D) and mask; empty rows read as `<bos>`."""
        ids = ids.clone()
        empty = (ids != self.config.pad_token_id).sum(dim=1) == 0
        ids[empty, 0] = self.config.bos_token_id
        return self.encode_ids(ids, kind)

    def encode_unique(
        self, ids: torch.LongTensor, kind: str
    ) -> tuple[torch.FloatTensor, torch.BoolTensor, torch.LongTensor]:
        """Encode each distinct row of (N, L) ids once: (U, L', D) features, (U, L') mask, (N,) row -> unique."""
        ids = trim_padding(ids, self.config.pad_token_id)
        unique, inverse = torch.unique(ids, dim=0, return_inverse=True)
        features, mask = self.encode(unique, kind)
        return features, mask, inverse

    def encode_each(self, ids: torch.LongTensor, kind: str) -> Features:
        features, mask, inverse = self.encode_unique(ids, kind)
        return features[inverse], mask[inverse]


class WordReader(TextReader):
    """The paper's: bidirectional GRUs over our word embeddings, one for missions and (with thoughts) one for
    thoughts. Also reads soft words (embeddings directly)."""

    def __init__(self, config: ThoughtCloningConfig, word_embedding: nn.Embedding, reads_thoughts: bool):
        super().__init__(config)
        self.word_embedding = word_embedding
        self.encoders = {"mission": BiGRUTextEncoder(config.text_dim)}
        if reads_thoughts:
            self.encoders["thought"] = BiGRUTextEncoder(config.text_dim)
        self.modules = {f"{kind}_encoder": encoder for kind, encoder in self.encoders.items()}

    def encode_ids(self, ids: torch.LongTensor, kind: str) -> Features:
        return self.encode_embeddings(self.word_embedding(ids), ids != self.config.pad_token_id, kind)

    def encode_embeddings(self, embeddings: torch.FloatTensor, mask: torch.BoolTensor, kind: str) -> Features:
        return self.encoders[kind](embeddings, mask), mask


class PretrainedEncoderReader(TextReader):
    """A pretrained ``AutoModel`` encoder (BERT, MiniLM, ...) reads missions and thoughts (see
    [`PretrainedTextEncoder`])."""

    def __init__(self, config: ThoughtCloningConfig, word_embedding: nn.Embedding, reads_thoughts: bool):
        super().__init__(config)
        self.encoder = PretrainedTextEncoder(config)
        self.modules = {"text_encoder": self.encoder}

    def encode_ids(self, ids: torch.LongTensor, kind: str) -> Features:
        return self.encoder(ids)


# ---------------------------------------------------------------------------------- thought channels
@dataclass
class WrittenThought:
    """A thought as written for the lower level: word ids (N, L), its soft words (N, L, D) for the soft-words
    channel (else None), and the upper level's new memory entries."""

    ids: torch.LongTensor | None
    soft: torch.FloatTensor | None = None
    memory: dict[str, torch.Tensor] = field(default_factory=dict)


class WordsChannel:
    """The paper's: the lower level and the next step's thought history read the thought's words."""

    def __init__(self, config: ThoughtCloningConfig, reader: TextReader, word_embedding: nn.Embedding):
        self.config, self.reader, self.word_embedding = config, reader, word_embedding

    def check_teacher_forcing(self, teacher_forcing: bool) -> None:
        """Raise ValueError when this channel cannot train with ``teacher_forcing``."""

    def initial_memory(self, previous_ids: torch.LongTensor) -> dict[str, torch.Tensor]:
        return {}

    def soft_words(
        self, step_logits: list[torch.FloatTensor], ids: torch.LongTensor
    ) -> torch.FloatTensor | None:
        """The soft words of a greedily decoded thought from its per-position logits (None: words only)."""
        return None

    def read(self, ids: torch.LongTensor, soft: torch.FloatTensor | None) -> Features:
        """A thought as the lower level or the thought history reads it."""
        return self.reader.encode_each(ids, "thought")

    def read_previous(self, memory: ThoughtCloningMemory) -> Features:
        return self.read(memory.previous_thought_ids, None)

    def memory_entries(
        self, ids: torch.LongTensor, soft: torch.FloatTensor | None
    ) -> dict[str, torch.Tensor]:
        """What the next step's memory keeps of the thought the lower level read."""
        return {"previous_thought_ids": ids}

    def inject_soft(
        self, injected: torch.LongTensor, keep: torch.BoolTensor, soft: torch.FloatTensor | None, width: int
    ) -> torch.FloatTensor | None:
        return None


class SoftWordsChannel(WordsChannel):
    """The no-thought-supervision ablation: each decoded position's expected word embedding,
    ``softmax(logits / soft_thought_temperature) @ word_embedding.weight``, so the action loss trains the upper
    level. Needs the word reader, and teacher forcing off (it never reads the demonstrator's thoughts)."""

    def check_teacher_forcing(self, teacher_forcing: bool) -> None:
        if teacher_forcing:
            raise ValueError(
                "thought_channel='soft_words' (the no-thought-supervision ablation) never reads the demonstrator's "
                "thoughts: pass teacher_forcing=False"
            )

    def initial_memory(self, previous_ids: torch.LongTensor) -> dict[str, torch.Tensor]:
        return {"previous_thought_embeddings": self.word_embedding(previous_ids)}

    def soft_words(self, step_logits: list[torch.FloatTensor], ids: torch.LongTensor) -> torch.FloatTensor:
        # The expected embedding rather than straight-through (one-hot forward, softmax backward): the forward is
        # then the function whose gradient is taken (no biased surrogate), it is the same computation in training
        # and in act(), and the channel is the continuous "latent vector" that the ablation names. Positions after
        # the greedy eos are masked (zeroed) as padding, like words.
        probs = (
            torch.stack(step_logits[: ids.shape[1]], dim=1) / self.config.soft_thought_temperature
        ).softmax(-1)
        return (probs @ self.word_embedding.weight) * (ids != self.config.pad_token_id)[..., None].to(
            probs.dtype
        )

    def read(self, ids: torch.LongTensor, soft: torch.FloatTensor | None) -> Features:
        """Its (N, L) greedy word ids give the mask exactly as for words; an empty thought reads as `<bos>`."""
        pad = self.config.pad_token_id
        empty_first = torch.zeros_like(ids, dtype=torch.bool)
        empty_first[:, 0] = (ids != pad).sum(dim=1) == 0
        bos = self.word_embedding.weight[self.config.bos_token_id]
        soft = torch.where(empty_first[..., None], bos.to(soft.dtype), soft)
        return self.reader.encode_embeddings(soft, (ids != pad) | empty_first, "thought")

    def read_previous(self, memory: ThoughtCloningMemory) -> Features:
        # A memory without soft words (e.g. built by hand) reads its words one-hot: their word embeddings.
        soft = memory.previous_thought_embeddings
        if soft is None:
            soft = self.word_embedding(memory.previous_thought_ids)
        return self.read(memory.previous_thought_ids, soft)

    def memory_entries(
        self, ids: torch.LongTensor, soft: torch.FloatTensor | None
    ) -> dict[str, torch.Tensor]:
        return {"previous_thought_ids": ids, "previous_thought_embeddings": soft}

    def inject_soft(
        self, injected: torch.LongTensor, keep: torch.BoolTensor, soft: torch.FloatTensor | None, width: int
    ) -> torch.FloatTensor:
        """An injected thought as one-hot words, i.e. exactly its word embeddings (0 on padding)."""
        one_hot = self.word_embedding(injected).to(soft.dtype)
        return torch.where(keep[:, None, None], one_hot, pad_positions(soft, width))


# ---------------------------------------------------------------------------------- the interface
@dataclass
class SequenceInputs:
    """What every upper level may read over a ``(B, T)`` training sequence (built once by the model)."""

    images: torch.LongTensor  # (B, T, 7, 7, 3)
    flat_visual: torch.FloatTensor  # (B * T, C, 7, 7), the shared visual encoder's maps
    visual_steps: tuple[torch.FloatTensor, ...]  # the same maps per step: T views of (B, C, 7, 7)
    mission: Features  # (B, L, D) the reader's mission features
    mission_ids: torch.LongTensor  # (B, L)
    thought_ids: torch.LongTensor | None  # (B, T, L) the demonstrator's thoughts, trailing padding trimmed
    memory: ThoughtCloningMemory  # the incoming memory
    step_mask: torch.BoolTensor  # (B, T)
    teacher_forcing: bool
    vlm_inputs: dict[str, torch.Tensor]  # the VLM's prompts and targets, "vlm_" prefix dropped


@dataclass
class ActingInputs:
    """One step of ``N`` environments, as every upper level may read it when acting."""

    images: torch.LongTensor  # (N, 7, 7, 3)
    mission_ids: torch.LongTensor  # (N, L)
    visual: torch.FloatTensor  # (N, C, 7, 7), the shared visual encoder's map
    mission: Features  # the reader's mission features


class ThoughtSequence:
    """An upper level over one training sequence: stepped once per time step by the model's loop."""

    def step(
        self, t: int, memory: ThoughtCloningMemory, starts: torch.BoolTensor
    ) -> tuple[Features | None, dict]:
        """Step ``t`` (after the model reset the memory rows where ``starts``): the thought the lower level reads
        (None: it reads none) and the upper level's entries of the next memory."""
        raise NotImplementedError

    def finish(self, step_mask: torch.BoolTensor) -> tuple[torch.FloatTensor | None, torch.LongTensor | None]:
        """After the last step: (thought_logits (B, T, L + 1, V) or None, generated_thought_ids (B, T, L) or None)."""
        return None, None


class UpperLevel:
    """The interface of a Thought Generator. Subclasses set ``modules`` (registered on the model by name)."""

    reader_class: type[TextReader] = WordReader
    writes_thoughts = True

    def __init__(self, config: ThoughtCloningConfig, word_embedding: nn.Embedding, reader: TextReader,
                 channel: WordsChannel, vocabulary: WordVocabulary):  # fmt: skip
        self.config, self.word_embedding, self.reader, self.channel = config, word_embedding, reader, channel
        self.vocabulary = vocabulary
        self.modules: dict[str, nn.Module] = {}

    # ---- memory
    def initial_memory(
        self, batch_size: int, device: torch.device | str, dtype: torch.dtype
    ) -> dict[str, torch.Tensor]:
        """This level's entries of a fresh memory (``<bos>`` as the previous thought)."""
        previous = bos_rows(self.config, batch_size, device)
        return {"previous_thought_ids": previous, **self.channel.initial_memory(previous)}

    # ---- training
    def check_forward(self, inputs: SequenceInputs, wants_loss: bool) -> None:
        """Raise ValueError, naming the fix, for inputs this level cannot train on."""
        self.channel.check_teacher_forcing(inputs.teacher_forcing)
        if inputs.teacher_forcing and inputs.thought_ids is None:
            raise ValueError("teacher forcing needs thought_input_ids (or pass teacher_forcing=False)")
        if inputs.vlm_inputs:
            raise ValueError("vlm_* inputs are for a VLM upper level (upper_level='vlm')")

    def sequence(self, inputs: SequenceInputs) -> ThoughtSequence:
        raise NotImplementedError

    def thought_nll(
        self, thought_logits: torch.FloatTensor | None, inputs: SequenceInputs, valid: torch.BoolTensor
    ) -> torch.FloatTensor | None:
        """The teacher-forced thought NLL summed over the words of the ``valid`` steps' thoughts (eos included);
        None when there is nothing to score."""
        if thought_logits is None:
            return None
        targets = thought_targets(inputs.thought_ids, self.config.eos_token_id, self.config.pad_token_id)[
            valid
        ]
        word_logits = thought_logits[valid][:, : targets.shape[1]]
        return F.cross_entropy(
            word_logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )

    # ---- acting
    def write(
        self, step: ActingInputs, memory: ThoughtCloningMemory, vlm_prompter: Any = None
    ) -> WrittenThought:
        """One step of ``N`` environments: step the memory and write the thought greedily."""
        raise NotImplementedError

    def inject(
        self, written: WrittenThought, thought: Sequence[str | None] | torch.LongTensor, count: int
    ) -> WrittenThought:
        """``written`` with the injected thoughts in place of the generated ones (steering): a list of ``count``
        strings or None (None keeps that row's thought), or word ids (N, L)."""
        generated = written.ids
        if isinstance(thought, torch.Tensor):
            injected, keep = (
                thought.to(generated.device).long(),
                (thought != self.config.pad_token_id).any(dim=1),
            )
        else:
            if isinstance(thought, str) or len(thought) != count:
                raise ValueError(
                    f"thought must be a list of {count} strings (or None to keep the generated one)"
                )
            empty = [text for text in thought if text is not None and not text.replace(",", " ").split()]
            if empty:
                raise ValueError(
                    f"an injected thought needs at least one word, got {empty[0]!r} (None keeps that environment's "
                    "generated thought)"
                )
            injected = self.vocabulary.to_ids([text or "" for text in thought]).to(generated.device)
            keep = torch.tensor([text is not None for text in thought], device=generated.device)
        if injected.shape[0] != count:
            raise ValueError(f"{injected.shape[0]} injected thoughts for {count} environments")
        width = max(injected.shape[1], generated.shape[1])
        injected = pad_to_width(injected, width)
        ids = torch.where(keep[:, None], injected, pad_to_width(generated, width))
        soft = None if written.soft is None else self.channel.inject_soft(injected, keep, written.soft, width)
        return WrittenThought(ids, soft, written.memory)

    def read(self, written: WrittenThought) -> Features | None:
        """The thought as the lower level reads it (None: it reads none)."""
        return self.channel.read(written.ids, written.soft)

    def memory_entries(self, written: WrittenThought) -> dict[str, torch.Tensor]:
        return {**written.memory, **self.channel.memory_entries(written.ids, written.soft)}

    # ---- files beside the weights
    def save_files(self, folder: Path) -> None:
        """Write what ``load_files`` needs to rebuild this level beside the weights (nothing by default)."""

    def load_files(self, name_or_path: str, **hub_kwargs: Any) -> None:
        """Rebuild what ``save_files`` wrote (after the weights are loaded)."""

    def weights_for_saving(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """The model's state dict as it is to be saved, or None to save it as it is (the default)."""
        return None


# ------------------------------------------------------------------------------------- the paper's
class PaperThoughtGenerator(UpperLevel):
    """The paper's upper level: a memory of the observation history, the mission and its previous thoughts
    (``ThoughtGenerator``), from which an LSTM decoder writes each step's thought."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.network = ThoughtGenerator(self.config)
        self.modules = {"thought_generator": self.network}

    def initial_memory(
        self, batch_size: int, device: torch.device | str, dtype: torch.dtype
    ) -> dict[str, torch.Tensor]:
        def zeros() -> torch.FloatTensor:
            return torch.zeros(batch_size, self.config.memory_dim, device=device, dtype=dtype)

        return {"upper_hidden": zeros(), "upper_cell": zeros(), "history_hidden": zeros(), "history_cell": zeros(),
                **super().initial_memory(batch_size, device, dtype)}  # fmt: skip

    def decoder_inputs(self, thought_ids: torch.LongTensor) -> torch.FloatTensor:
        """(N, L) thought ids -> embeddings of `<bos>` + words: (N, L + 1, D)."""
        bos = bos_rows(self.config, thought_ids.shape[0], thought_ids.device)
        return self.word_embedding(torch.cat([bos, thought_ids], dim=1))

    def write_greedily(
        self, hidden: torch.FloatTensor, cell: torch.FloatTensor, scored_positions: int = 0
    ) -> tuple[torch.LongTensor, torch.FloatTensor | None, list[torch.FloatTensor]]:
        """Greedy decoding from the upper memory, stopping once every row has written eos (or after
        ``max_thought_length`` words): thought ids (N, L) padded with 0, eos dropped; the logits of the first
        ``scored_positions`` positions (N, scored_positions, V), decoding at least that far, so a pass without
        teacher forcing can be scored against labels; and every position's logits (for soft words).

        The decoder reads its greedy words in both channels (the paper's decoding, so the words reported for a
        soft thought are the ones it decodes to); gradients reach the upper memory through the logits."""
        limit = max(self.config.max_thought_length + 1, scored_positions)
        eos, pad = self.config.eos_token_id, self.config.pad_token_id
        tokens = bos_rows(self.config, hidden.shape[0], hidden.device)
        state = (hidden[None].contiguous(), cell[None].contiguous())
        finished = torch.zeros(hidden.shape[0], dtype=torch.bool, device=hidden.device)
        words, all_logits = [], []
        for position in range(limit):
            outputs, state = self.network.decoder(self.word_embedding(tokens), state)
            logits = self.network.word_logits(outputs[:, -1])
            tokens = logits.argmax(dim=-1, keepdim=True)
            words.append(torch.where(finished, pad, tokens[:, 0]))
            all_logits.append(logits)
            finished = finished | (tokens[:, 0] == eos)
            if position + 1 >= scored_positions and bool(finished.all()):
                break
        ids = torch.stack(words, dim=1)
        ids = trim_padding(ids.masked_fill(ids == eos, pad)[:, : self.config.max_thought_length], pad, keep=1)
        scored = torch.stack(all_logits[:scored_positions], dim=1) if scored_positions else None
        return ids, scored, all_logits

    def sequence(self, inputs: SequenceInputs) -> ThoughtSequence:
        if inputs.teacher_forcing:
            return PaperTeacherForcedSequence(self, inputs)
        return PaperFreeSequence(self, inputs)

    def write(
        self, step: ActingInputs, memory: ThoughtCloningMemory, vlm_prompter: Any = None
    ) -> WrittenThought:
        previous = self.channel.read_previous(memory)
        upper_hidden, upper_cell, history_hidden, history_cell = self.network.step(
            step.visual, step.mission, previous, memory
        )
        ids, _, step_logits = self.write_greedily(upper_hidden, upper_cell)
        return WrittenThought(ids, self.channel.soft_words(step_logits, ids), {
            "upper_hidden": upper_hidden, "upper_cell": upper_cell, "history_hidden": history_hidden,
            "history_cell": history_cell,
        })  # fmt: skip


class _PaperSequence(ThoughtSequence):
    """What both kinds of pass precompute: the first FiLM block's convolution of every frame and the mission's
    cross-attention keys and values (neither depends on the recurrence)."""

    def __init__(self, level: PaperThoughtGenerator, inputs: SequenceInputs):
        self.level, self.inputs, self.mission = level, inputs, inputs.mission
        batch, steps = inputs.images.shape[:2]
        # Per-step views made once (see ThoughtCloningModel.forward: [:, t] in the loop is quadratic in backward).
        self.convolved = level.network.film.blocks[0].convolve(inputs.flat_visual).unflatten(0, (batch, steps)).unbind(1)
        self.visual = inputs.visual_steps
        self.keys_values = level.network.mission_keys_values(inputs.mission[0])

    def step_memory(
        self, t: int, previous: Features, memory: ThoughtCloningMemory
    ) -> tuple[torch.FloatTensor, ...]:
        return self.level.network.step(self.visual[t], self.mission, previous, memory, self.convolved[t],
                                       self.keys_values)  # fmt: skip


class PaperTeacherForcedSequence(_PaperSequence):
    """Teacher forcing: the demonstrator's thoughts feed the thought history and the lower level; the decoder is
    scored on them after the recurrence, for every valid step at once."""

    def __init__(self, level: PaperThoughtGenerator, inputs: SequenceInputs):
        super().__init__(level, inputs)
        thought_ids, memory = inputs.thought_ids, inputs.memory
        batch, steps = thought_ids.shape[:2]
        # One pool of distinct thoughts: the batch's, the incoming previous thoughts, and <bos> alone.
        width = max(thought_ids.shape[2], memory.previous_thought_ids.shape[1])
        rows = torch.cat([
            pad_to_width(thought_ids.flatten(0, 1), width),
            pad_to_width(memory.previous_thought_ids, width),
            pad_to_width(bos_rows(level.config, 1, thought_ids.device), width),
        ])  # fmt: skip
        self.pool_features, self.pool_mask, pool_index = level.reader.encode_unique(rows, "thought")
        self.step_index = pool_index[: batch * steps].view(batch, steps)
        self.previous_index = pool_index[batch * steps : batch * steps + batch]
        self.bos_index = pool_index[-1].expand(batch)
        self.upper_states: list[tuple[torch.FloatTensor, torch.FloatTensor]] = []

    def step(self, t: int, memory: ThoughtCloningMemory, starts: torch.BoolTensor) -> tuple[Features, dict]:
        previous_index = torch.where(starts, self.bos_index, self.previous_index)
        previous = (self.pool_features[previous_index], self.pool_mask[previous_index])
        upper_hidden, upper_cell, history_hidden, history_cell = self.step_memory(t, previous, memory)
        self.upper_states.append((upper_hidden, upper_cell))
        self.previous_index = self.step_index[:, t]
        thought = (self.pool_features[self.previous_index], self.pool_mask[self.previous_index])
        return thought, {"upper_hidden": upper_hidden, "upper_cell": upper_cell, "history_hidden": history_hidden,
                         "history_cell": history_cell, "previous_thought_ids": self.inputs.thought_ids[:, t]}  # fmt: skip

    def finish(self, step_mask: torch.BoolTensor) -> tuple[torch.FloatTensor, None]:
        thought_ids, batch, steps = self.inputs.thought_ids, *step_mask.shape
        upper_hidden = torch.stack([h for h, _ in self.upper_states], dim=1)[step_mask]
        upper_cell = torch.stack([c for _, c in self.upper_states], dim=1)[step_mask]
        valid_logits, _ = self.level.network.decode(
            self.level.decoder_inputs(thought_ids[step_mask]), upper_hidden, upper_cell
        )
        thought_logits = valid_logits.new_zeros(batch, steps, *valid_logits.shape[1:])
        thought_logits[step_mask] = valid_logits
        return thought_logits, None


class PaperFreeSequence(_PaperSequence):
    """Teacher forcing off: each step's greedy thought (its words, or soft words) feeds the lower level and the
    next step's thought history; with thought labels its logits are kept for scoring."""

    def __init__(self, level: PaperThoughtGenerator, inputs: SequenceInputs):
        super().__init__(level, inputs)
        self.scored_positions = inputs.thought_ids.shape[2] + 1 if inputs.thought_ids is not None else 0
        self.generated: list[torch.LongTensor] = []
        self.generated_logits: list[torch.FloatTensor | None] = []

    def step(self, t: int, memory: ThoughtCloningMemory, starts: torch.BoolTensor) -> tuple[Features, dict]:
        channel = self.level.channel
        upper_hidden, upper_cell, history_hidden, history_cell = self.step_memory(
            t, channel.read_previous(memory), memory
        )
        ids, logits, step_logits = self.level.write_greedily(upper_hidden, upper_cell, self.scored_positions)
        soft = channel.soft_words(step_logits, ids)
        self.generated.append(ids)
        self.generated_logits.append(logits)
        return channel.read(ids, soft), {"upper_hidden": upper_hidden, "upper_cell": upper_cell,
                                         "history_hidden": history_hidden, "history_cell": history_cell,
                                         **channel.memory_entries(ids, soft)}  # fmt: skip

    def finish(self, step_mask: torch.BoolTensor) -> tuple[torch.FloatTensor | None, torch.LongTensor]:
        return _stack_generated(self.generated, self.generated_logits if self.scored_positions else None)


def _stack_generated(
    generated: list[torch.LongTensor], logits: list[torch.FloatTensor] | None
) -> tuple[torch.FloatTensor | None, torch.LongTensor]:
    width = max(ids.shape[1] for ids in generated)
    ids = torch.stack([pad_to_width(ids, width) for ids in generated], dim=1)
    return (torch.stack(logits, dim=1) if logits is not None else None), ids


# ---------------------------------------------------------------------------------- text encoder
class TextEncoderThoughtGenerator(PaperThoughtGenerator):
    """The paper's upper level, with missions and thoughts (for both levels) read by a pretrained ``AutoModel``
    encoder instead of the GRUs (``config.text_encoder_config``)."""

    reader_class = PretrainedEncoderReader


# ----------------------------------------------------------------------------------------- none (BC)
class NoThoughtGenerator(UpperLevel):
    """The BC baseline: no upper level; the lower level reads the mission only."""

    writes_thoughts = False

    def initial_memory(
        self, batch_size: int, device: torch.device | str, dtype: torch.dtype
    ) -> dict[str, torch.Tensor]:
        return {}

    def check_forward(self, inputs: SequenceInputs, wants_loss: bool) -> None:
        if inputs.vlm_inputs:
            raise ValueError("vlm_* inputs are for a VLM upper level (upper_level='vlm')")

    def sequence(self, inputs: SequenceInputs) -> ThoughtSequence:
        return NoThoughtSequence()

    def write(
        self, step: ActingInputs, memory: ThoughtCloningMemory, vlm_prompter: Any = None
    ) -> WrittenThought:
        return WrittenThought(None)

    def inject(self, written: WrittenThought, thought: Any, count: int) -> WrittenThought:
        raise ValueError("this model has no thought generator (BC): there is no thought to inject")

    def read(self, written: WrittenThought) -> None:
        return None

    def memory_entries(self, written: WrittenThought) -> dict[str, torch.Tensor]:
        return {}


class NoThoughtSequence(ThoughtSequence):
    def step(self, t: int, memory: ThoughtCloningMemory, starts: torch.BoolTensor) -> tuple[None, dict]:
        return None, {}


# ---------------------------------------------------------------------------------------------- VLM
VLM_PROMPTER_FOLDER = "vlm_prompter"
# The vlm_* inputs a VLM's thought loss cannot do without (VLMThoughtPrompter.training_inputs builds them all).
REQUIRED_VLM_INPUTS = ("input_ids", "attention_mask", "pixel_values", "labels")


class VLMThoughtGenerator(UpperLevel):
    """An image-text-to-text model writes the thought from a rendering of the view, the mission and the previous
    thought (prompts from a [`VLMThoughtPrompter`]); the lower level reads the thought's words through the word
    reader (the VLM's words outside our vocabulary reach it as `<unk>`).

    Training: the VLM's teacher-forced NLL of the demonstrator's thought (``vlm_*`` inputs), plus the lower level
    acting on the demonstrator's thoughts (teacher forcing) or on the VLM's own greedy thoughts (teacher forcing
    off: one ``generate`` per step). The prompter (its tokenizer, image processor and settings) is saved in the
    model folder's ``vlm_prompter/`` and rebuilt by ``from_pretrained``."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        # Load pretrained weights with ``ThoughtCloningModel.from_vlm`` or ``load_vlm_weights``, never here.
        self.vlm = AutoModelForImageTextToText.from_config(self.config.vlm_config)
        self.modules = {"vlm": self.vlm}
        self.prompter: Any = None

    def prompter_for(self, vlm_prompter: Any = None) -> Any:
        prompter = vlm_prompter if vlm_prompter is not None else self.prompter
        if prompter is None:
            raise ValueError(
                "a VLM upper level writes thoughts through its prompter, and this model has none: load the model "
                f"from a folder saved with its {VLM_PROMPTER_FOLDER}/ (ThoughtCloningModel.from_vlm does this), set "
                "model.vlm_prompter = VLMThoughtPrompter(...), or pass act(..., vlm_prompter=...)"
            )
        return prompter

    def check_forward(self, inputs: SequenceInputs, wants_loss: bool) -> None:
        if inputs.teacher_forcing and inputs.thought_ids is None:
            raise ValueError("teacher forcing needs thought_input_ids (or pass teacher_forcing=False)")
        if not inputs.teacher_forcing:
            self.prompter_for()
        given = inputs.vlm_inputs
        if not given:
            if wants_loss:
                raise ValueError(
                    "a VLM upper level learns its thoughts from its vlm_* inputs (prompts and target thoughts in the "
                    "VLM's tokenizer), and none were given: add model.vlm_prompter.training_inputs(episodes) (or "
                    "window_inputs(batch, start, length) for a truncated-BPTT window) to the batch"
                )
            return
        missing = [f"vlm_{name}" for name in REQUIRED_VLM_INPUTS if name not in given]
        if missing:
            raise ValueError(f"incomplete vlm_* inputs: {missing} missing (VLMThoughtPrompter.training_inputs builds "
                             "them all)")  # fmt: skip
        valid = int(inputs.step_mask.sum())
        rows = {
            f"vlm_{name}": int(given[name].shape[0]) for name in ("input_ids", "attention_mask", "labels")
        }
        if any(count != valid for count in rows.values()):
            raise ValueError(
                f"the vlm_* inputs hold {rows} prompts, but these sequences have {valid} valid steps: they must hold "
                "one prompt per valid step, in (episode, step) order, for exactly these steps (for a truncated-BPTT "
                "window use VLMThoughtPrompter.window_inputs(batch, start, length))"
            )
        if given["labels"].shape != given["input_ids"].shape:
            raise ValueError(f"vlm_labels {tuple(given['labels'].shape)} and vlm_input_ids "
                             f"{tuple(given['input_ids'].shape)} must have the same shape")  # fmt: skip

    def sequence(self, inputs: SequenceInputs) -> ThoughtSequence:
        if inputs.teacher_forcing:
            return VLMTeacherForcedSequence(self, inputs)
        return VLMFreeSequence(self, inputs)

    def thought_nll(
        self, thought_logits: torch.FloatTensor | None, inputs: SequenceInputs, valid: torch.BoolTensor
    ) -> torch.FloatTensor | None:
        """Teacher-forced NLL of the VLM's thoughts, summed over their tokens (eos included), all steps at once."""
        if not inputs.vlm_inputs:
            return None
        model_inputs = {name: value for name, value in inputs.vlm_inputs.items() if name != "labels"}
        # The LM head runs on the positions that predict a thought token only: the prompt's positions would
        # cost (steps x prompt length x the VLM's vocabulary) logits, most of the memory of a batch.
        hidden = self.vlm.model(**model_inputs).last_hidden_state
        targets = inputs.vlm_inputs["labels"][:, 1:]
        predicting = targets != IGNORE_INDEX
        logits = self.vlm.lm_head(hidden[:, :-1][predicting])
        return F.cross_entropy(logits.float(), targets[predicting], reduction="sum")

    def generate(self, images: torch.LongTensor, mission_ids: torch.LongTensor, previous_ids: torch.LongTensor,
                 vlm_prompter: Any = None) -> torch.LongTensor:  # fmt: skip
        """Greedy thoughts (N, L) of our vocabulary for one step of ``N`` views."""
        prompter = self.prompter_for(vlm_prompter)
        to_text = self.vocabulary.to_text
        prompts = prompter.generation_inputs(images, to_text(mission_ids), to_text(previous_ids))
        prompts = {name: value.to(images.device) for name, value in prompts.items()}
        written = self.vlm.generate(**prompts, max_new_tokens=self.config.vlm_max_new_tokens, do_sample=False,
                                    **prompter.generation_settings())  # fmt: skip
        thoughts = prompter.decode(written[:, prompts["input_ids"].shape[1] :])
        return self.vocabulary.to_ids(thoughts, unknown_words="unk").to(images.device)

    def write(
        self, step: ActingInputs, memory: ThoughtCloningMemory, vlm_prompter: Any = None
    ) -> WrittenThought:
        return WrittenThought(
            self.generate(step.images, step.mission_ids, memory.previous_thought_ids, vlm_prompter)
        )

    # ---- files beside the weights: the prompter, and LoRA merged into the VLM's weights
    def save_files(self, folder: Path) -> None:
        if self.prompter is not None:
            self.prompter.save_pretrained(Path(folder) / VLM_PROMPTER_FOLDER)

    def load_files(self, name_or_path: str, **hub_kwargs: Any) -> None:
        from .processing_thought_cloning import VLMThoughtPrompter

        self.prompter = VLMThoughtPrompter.from_pretrained(
            name_or_path, self.config.vlm_config, subfolder=VLM_PROMPTER_FOLDER, missing_ok=True, **hub_kwargs
        )

    def weights_for_saving(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """With LoRA adapters (peft, injected in place) the saved VLM weights are the merged ones, under the VLM's
        own names, so the folder loads without peft and with nothing but the VLM's weights."""
        if not any(_is_lora_layer(module) for module in self.vlm.modules()):
            return None
        merged = copy.deepcopy(self.vlm)
        for name, module in list(merged.named_modules()):
            if _is_lora_layer(module):
                module.merge()
                parent_name, _, child = name.rpartition(".")
                setattr(
                    merged.get_submodule(parent_name) if parent_name else merged,
                    child,
                    module.get_base_layer(),
                )
        saved = {key: value for key, value in state_dict.items() if not key.startswith("vlm.")}
        saved.update({f"vlm.{key}": value for key, value in merged.state_dict().items()})
        return saved


def _is_lora_layer(module: nn.Module) -> bool:
    # Duck-typed (peft's BaseTunerLayer), so that this module needs no peft to load.
    return hasattr(module, "merge") and hasattr(module, "get_base_layer") and hasattr(module, "lora_A")


class VLMTeacherForcedSequence(ThoughtSequence):
    """The lower level reads the demonstrator's thoughts (each distinct one encoded once)."""

    def __init__(self, level: VLMThoughtGenerator, inputs: SequenceInputs):
        batch, steps = inputs.thought_ids.shape[:2]
        self.thought_ids = inputs.thought_ids
        features, mask, index = level.reader.encode_unique(inputs.thought_ids.flatten(0, 1), "thought")
        self.features, self.mask, self.index = features, mask, index.view(batch, steps)

    def step(self, t: int, memory: ThoughtCloningMemory, starts: torch.BoolTensor) -> tuple[Features, dict]:
        index = self.index[:, t]
        return (self.features[index], self.mask[index]), {"previous_thought_ids": self.thought_ids[:, t]}


class VLMFreeSequence(ThoughtSequence):
    """The lower level reads the VLM's own greedy thoughts (generated step by step, no gradient)."""

    def __init__(self, level: VLMThoughtGenerator, inputs: SequenceInputs):
        self.level, self.inputs = level, inputs
        self.generated: list[torch.LongTensor] = []

    def step(self, t: int, memory: ThoughtCloningMemory, starts: torch.BoolTensor) -> tuple[Features, dict]:
        ids = self.level.generate(
            self.inputs.images[:, t], self.inputs.mission_ids, memory.previous_thought_ids
        )
        self.generated.append(ids)
        return self.level.channel.read(ids, None), {"previous_thought_ids": ids}

    def finish(self, step_mask: torch.BoolTensor) -> tuple[None, torch.LongTensor]:
        return _stack_generated(self.generated, None)


UPPER_LEVEL_CLASSES: Mapping[str, type[UpperLevel]] = {
    "native": PaperThoughtGenerator,
    "text_encoder": TextEncoderThoughtGenerator,
    "vlm": VLMThoughtGenerator,
    "none": NoThoughtGenerator,
}
THOUGHT_CHANNEL_CLASSES: Mapping[str, type[WordsChannel]] = {
    "words": WordsChannel,
    "soft_words": SoftWordsChannel,
}
