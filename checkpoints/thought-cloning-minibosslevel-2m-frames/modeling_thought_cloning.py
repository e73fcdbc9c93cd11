"""Thought Cloning agent (Hu & Clune, NeurIPS 2023): an upper level that writes a thought at every step and a
lower level that acts on the observation, the mission and that thought.

Reads top to bottom: outputs, building blocks (visual encoder, FiLM, attention pooling, text encoders), the
upper level (Thought Generator), the lower level (Action Generator), then [`ThoughtCloningModel`], which
can swap the native upper level for a pretrained text encoder or a vision-language model (see the config).

Shapes: ``B`` batch of episodes (or environments), ``T`` time steps, ``L`` words, ``V`` vocabulary size,
``A`` actions, ``M`` memory_dim, ``D`` text_dim, ``C`` image_dim.

Fixes of the original implementation: every attention takes a padding mask; normalisation is GroupNorm
with one group (LayerNorm over channels and cells), which has no running statistics, so the no-grad pass
that computes memories before a truncated-BPTT window cannot change the model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn
from torch.nn import functional as F
from transformers import AutoModel, AutoModelForImageTextToText, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput
from transformers.utils import logging as hf_logging

from .configuration_thought_cloning import ThoughtCloningConfig

__all__ = [
    "ThoughtCloningActOutput",
    "ThoughtCloningMemory",
    "ThoughtCloningModel",
    "ThoughtCloningOutput",
    "ThoughtCloningPreTrainedModel",
]

IGNORE_INDEX = -100
# The buffer that ties the weights to the vocabulary they were trained with (see ``vocabulary_checksum``).
VOCABULARY_CHECKSUM = "vocabulary_checksum"

logger = hf_logging.get_logger(__name__)


def vocabulary_checksum(vocabulary: Sequence[str]) -> torch.Tensor:
    """SHA-256 of the vocabulary in id order, as 32 uint8 values.

    Saved with the weights (a buffer), so a ``config.json`` whose vocabulary was edited afterwards (two colours
    swapped, say, which would turn "open red door" into "open green door") no longer matches them.
    """
    digest = hashlib.sha256(json.dumps(list(vocabulary), ensure_ascii=False).encode("utf-8")).digest()
    return torch.tensor(list(digest), dtype=torch.uint8)


# --------------------------------------------------------------------------------------------- outputs
@dataclass
class ThoughtCloningMemory(ModelOutput):
    """Recurrent state carried between steps (and between truncated-BPTT windows).

    Args:
        lower_hidden, lower_cell (`torch.FloatTensor` of shape `(B, M)`): the Action Generator's LSTM state.
        upper_hidden, upper_cell (`torch.FloatTensor` of shape `(B, M)`, *optional*): the Thought Generator's
            LSTM state (None for BC).
        history_hidden, history_cell (`torch.FloatTensor` of shape `(B, M)`, *optional*): the thought-history
            LSTM state (None for BC).
        previous_thought_ids (`torch.LongTensor` of shape `(B, L)`, *optional*): the thought of the previous
            step, `<bos>` alone at an episode start (None for BC).
        previous_thought_embeddings (`torch.FloatTensor` of shape `(B, L, D)`, *optional*): what the thought
            history reads of that thought with ``thought_channel="soft_words"`` (its soft words, 0 on padding;
            the `<bos>` embedding at an episode start); None for the "words" channel.
    """

    lower_hidden: torch.FloatTensor | None = None
    lower_cell: torch.FloatTensor | None = None
    upper_hidden: torch.FloatTensor | None = None
    upper_cell: torch.FloatTensor | None = None
    history_hidden: torch.FloatTensor | None = None
    history_cell: torch.FloatTensor | None = None
    previous_thought_ids: torch.LongTensor | None = None
    previous_thought_embeddings: torch.FloatTensor | None = None

    def detach(self) -> ThoughtCloningMemory:
        """The same memory cut from the graph (between truncated-BPTT windows)."""
        return ThoughtCloningMemory(**{k: v.detach() for k, v in self.items()})


@dataclass
class ThoughtCloningOutput(ModelOutput):
    """Output of [`ThoughtCloningModel.forward`] over a batch of sequences.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): ``action_loss - entropy_coef * entropy +
            thought_loss_weight * thought_loss``, returned when ``actions`` are given.
        action_loss (`torch.FloatTensor` of shape `()`, *optional*): action cross-entropy, mean over valid steps.
        thought_loss (`torch.FloatTensor` of shape `()`, *optional*): thought NLL summed over the words of a
            thought (eos included, padding masked), mean over valid steps.
        entropy (`torch.FloatTensor` of shape `()`, *optional*): action-distribution entropy, mean over valid steps.
        action_logits (`torch.FloatTensor` of shape `(B, T, A)`).
        thought_logits (`torch.FloatTensor` of shape `(B, T, L + 1, V)`, *optional*): decoder logits for every
            step's thought (its words then eos), when thought labels are given (None for BC and for a VLM upper
            level, whose loss is in ``thought_loss``).
        generated_thought_ids (`torch.LongTensor` of shape `(B, T, L)`, *optional*): greedy thoughts, padded
            with 0, when teacher forcing is off (with ``thought_channel="soft_words"``: the words that the soft
            thoughts the lower level read decode to greedily).
        memory ([`ThoughtCloningMemory`]): the memory after the last step.
    """

    loss: torch.FloatTensor | None = None
    action_loss: torch.FloatTensor | None = None
    thought_loss: torch.FloatTensor | None = None
    entropy: torch.FloatTensor | None = None
    action_logits: torch.FloatTensor | None = None
    thought_logits: torch.FloatTensor | None = None
    generated_thought_ids: torch.LongTensor | None = None
    memory: ThoughtCloningMemory | None = None


@dataclass
class ThoughtCloningActOutput(ModelOutput):
    """Output of [`ThoughtCloningModel.act`] for one step of ``N`` environments.

    Args:
        actions (`torch.LongTensor` of shape `(N,)`): sampled (or argmax) actions.
        action_logits (`torch.FloatTensor` of shape `(N, A)`).
        action_probs (`torch.FloatTensor` of shape `(N, A)`): the action distribution.
        thought_ids (`torch.LongTensor` of shape `(N, L)`, *optional*): the thought the lower level read
            (generated, or injected), padded with 0; None for BC. With ``thought_channel="soft_words"`` the lower
            level read the soft words of a generated thought, and these are their greedy words.
        thoughts (`list[str]`, *optional*): the same thoughts as text.
        memory ([`ThoughtCloningMemory`]): the memory to pass to the next step.
    """

    actions: torch.LongTensor | None = None
    action_logits: torch.FloatTensor | None = None
    action_probs: torch.FloatTensor | None = None
    thought_ids: torch.LongTensor | None = None
    thoughts: list[str] | None = None
    memory: ThoughtCloningMemory | None = None


# ------------------------------------------------------------------------------------- building blocks
def channel_norm(channels: int) -> nn.GroupNorm:
    """LayerNorm over (channels, cells) of a feature map: no running statistics to corrupt."""
    return nn.GroupNorm(1, channels)


class CellBagOfWordsEmbedding(nn.Module):
    """Each cell's 3 symbolic values (object, colour, state) embedded in disjoint tables and summed."""

    def __init__(self, max_value: int, dim: int):
        super().__init__()
        self.max_value = max_value
        self.embedding = nn.Embedding(3 * max_value, dim)

    def forward(self, images: torch.LongTensor) -> torch.FloatTensor:
        """(N, 7, 7, 3) integers -> (N, C, 7, 7)."""
        channel_offsets = torch.arange(3, device=images.device) * self.max_value
        cells = self.embedding(images.long() + channel_offsets).sum(dim=-2)
        return cells.permute(0, 3, 1, 2)


class VisualEncoder(nn.Module):
    """Bag-of-words cell embedding, then two (3x3 conv, norm, ReLU) layers; shared by both levels."""

    def __init__(self, config: ThoughtCloningConfig):
        super().__init__()
        dim = config.image_dim
        self.cell_embedding = CellBagOfWordsEmbedding(config.max_cell_value, dim)
        self.layers = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1), channel_norm(dim), nn.ReLU(),
            nn.Conv2d(dim, dim, 3, padding=1), channel_norm(dim), nn.ReLU(),
        )

    def forward(self, images: torch.LongTensor) -> torch.FloatTensor:
        """(N, 7, 7, 3) -> (N, C, 7, 7)."""
        return self.layers(self.cell_embedding(images))


class ResidualFiLM(nn.Module):
    """Feature-wise linear modulation of a feature map by a conditioning vector, with a residual.

    The two convolutions run before the modulation, so for a block whose input does not depend on the
    recurrence (the first block reads the visual map) ``convolve`` can run for all frames at once.
    """

    def __init__(self, condition_dim: int, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm1 = channel_norm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.scale = nn.Linear(condition_dim, channels)
        self.shift = nn.Linear(condition_dim, channels)
        self.norm2 = channel_norm(channels)

    def convolve(self, features: torch.FloatTensor) -> torch.FloatTensor:
        return self.conv2(F.relu(self.norm1(self.conv1(features))))

    def modulate(
        self, features: torch.FloatTensor, convolved: torch.FloatTensor, condition: torch.FloatTensor
    ) -> torch.FloatTensor:
        hidden = convolved * self.scale(condition)[:, :, None, None] + self.shift(condition)[:, :, None, None]
        return features + F.relu(self.norm2(hidden))

    def forward(self, features: torch.FloatTensor, condition: torch.FloatTensor) -> torch.FloatTensor:
        return self.modulate(features, self.convolve(features), condition)


class FiLMStack(nn.Module):
    """Residual FiLM blocks, then a max-pool over the 7x7 cells: (N, C, 7, 7), (N, D) -> (N, C).

    ``first_convolved`` is the first block's ``convolve(features)`` when precomputed for a whole batch.
    """

    def __init__(self, condition_dim: int, channels: int, num_blocks: int = 2):
        super().__init__()
        self.blocks = nn.ModuleList(ResidualFiLM(condition_dim, channels) for _ in range(num_blocks))

    def forward(
        self,
        features: torch.FloatTensor,
        condition: torch.FloatTensor,
        first_convolved: torch.FloatTensor | None = None,
    ) -> torch.FloatTensor:
        for index, block in enumerate(self.blocks):
            convolved = first_convolved if index == 0 and first_convolved is not None else block.convolve(features)
            features = block.modulate(features, convolved, condition)
        return features.amax(dim=(2, 3))


class AttentionPool(nn.Module):
    """One query vector (from a memory) attends over padded tokens: (N, Q), (N, L, D), (N, L) -> (N, D)."""

    def __init__(self, query_dim: int, token_dim: int):
        super().__init__()
        self.query = nn.Linear(query_dim, token_dim)
        self.scale = 1.0 / math.sqrt(token_dim)

    def forward(self, state: torch.FloatTensor, tokens: torch.FloatTensor, mask: torch.BoolTensor) -> torch.FloatTensor:
        scores = torch.einsum("nld,nd->nl", tokens, self.query(state)) * self.scale
        weights = scores.masked_fill(~mask, torch.finfo(scores.dtype).min).softmax(dim=-1)
        return torch.einsum("nl,nld->nd", weights, tokens)


class BiGRUTextEncoder(nn.Module):
    """Bidirectional GRU over input embeddings (words, or soft words), per-token outputs: (N, L, D) -> (N, L, D)."""

    def __init__(self, text_dim: int):
        super().__init__()
        self.gru = nn.GRU(text_dim, text_dim // 2, batch_first=True, bidirectional=True)

    def forward(self, embeddings: torch.FloatTensor, mask: torch.BoolTensor) -> torch.FloatTensor:
        lengths = mask.sum(dim=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(embeddings, lengths, batch_first=True, enforce_sorted=False)
        outputs, _ = self.gru(packed)
        outputs, _ = nn.utils.rnn.pad_packed_sequence(outputs, batch_first=True, total_length=embeddings.shape[1])
        return outputs


class PretrainedTextEncoder(nn.Module):
    """A pretrained ``AutoModel`` encoder (BERT, MiniLM, ...) reading word ids of our vocabulary.

    Word ids are re-tokenized into the encoder's word pieces through a table built from its tokenizer
    (``config.text_encoder_word_pieces``), framed by its cls/sep tokens, so generated thoughts can be read
    without text round trips. Per-token outputs are projected to ``text_dim``.
    """

    def __init__(self, config: ThoughtCloningConfig):
        super().__init__()
        self.encoder = AutoModel.from_config(config.text_encoder_config)
        self.trainable = config.text_encoder_trainable
        # Derived from the config, so not saved; ``_init_weights`` refills it after meta-device loading.
        self.register_buffer("word_pieces", self.word_piece_table(config), persistent=False)
        self.cls_id, self.sep_id, self.pad_id = config.text_encoder_special_ids
        self.projection = nn.Linear(config.text_encoder_config.hidden_size, config.text_dim)
        if not self.trainable:
            self.encoder.requires_grad_(False)

    @staticmethod
    def word_piece_table(config: ThoughtCloningConfig) -> torch.LongTensor:
        """(V, P) piece ids of each vocabulary word, -1 where it has no more pieces."""
        pieces = config.text_encoder_word_pieces
        table = torch.full((len(pieces), max(1, max(map(len, pieces)))), -1, dtype=torch.long)
        for word_id, word_pieces in enumerate(pieces):
            table[word_id, : len(word_pieces)] = torch.tensor(word_pieces, dtype=torch.long)
        return table

    def train(self, mode: bool = True) -> PretrainedTextEncoder:
        super().train(mode)
        if not self.trainable:
            self.encoder.eval()  # a frozen encoder keeps dropout off
        return self

    def to_pieces(self, word_ids: torch.LongTensor) -> tuple[torch.LongTensor, torch.BoolTensor]:
        """(N, L) word ids -> (N, P) piece ids framed as [cls] pieces [sep], and their mask."""
        pieces = self.word_pieces[word_ids].flatten(1)  # (N, L * width), -1 where no piece
        valid = pieces >= 0
        order = torch.sort((~valid).to(torch.int8), dim=1, stable=True).indices  # valid pieces first, in order
        pieces, valid = pieces.gather(1, order), valid.gather(1, order)
        lengths = valid.sum(dim=1)
        width = int(lengths.max()) + 2
        framed = torch.full((pieces.shape[0], width), self.pad_id, dtype=torch.long, device=pieces.device)
        positions = torch.arange(width, device=pieces.device)
        framed[:, 0] = self.cls_id
        body = pieces[:, : width - 2].clamp(min=0)
        framed[:, 1 : width - 1] = torch.where(valid[:, : width - 2], body, framed[:, 1 : width - 1])
        framed.scatter_(1, (lengths + 1)[:, None], self.sep_id)
        return framed, positions[None, :] <= (lengths + 1)[:, None]

    def forward(self, word_ids: torch.LongTensor) -> tuple[torch.FloatTensor, torch.BoolTensor]:
        pieces, mask = self.to_pieces(word_ids)
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            hidden = self.encoder(input_ids=pieces, attention_mask=mask.long()).last_hidden_state
        return self.projection(hidden), mask


class MissionCrossAttentionBlock(nn.Module):
    """A single query (from the thought history) cross-attends to mission tokens, post-norm transformer style.

    The mission's keys and values do not depend on the recurrence: ``keys_values`` computes them once per
    batch, and each step only projects its query.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"text_dim {dim} must be divisible by num_attention_heads {num_heads}")
        self.num_heads = num_heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.output = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
        self.norm2 = nn.LayerNorm(dim)

    def _heads(self, states: torch.FloatTensor) -> torch.FloatTensor:
        return states.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (N, H, L, D / H)

    def keys_values(self, tokens: torch.FloatTensor) -> tuple[torch.FloatTensor, torch.FloatTensor]:
        return self._heads(self.key(tokens)), self._heads(self.value(tokens))

    def forward(
        self, query: torch.FloatTensor, keys_values: tuple[torch.FloatTensor, torch.FloatTensor], mask: torch.BoolTensor
    ) -> torch.FloatTensor:
        keys, values = keys_values
        heads = self._heads(self.query(query)[:, None])  # (N, H, 1, D / H)
        attended = F.scaled_dot_product_attention(heads, keys, values, attn_mask=mask[:, None, None, :])
        query = self.norm1(query + self.output(attended.transpose(1, 2).flatten(2)[:, 0]))
        return self.norm2(query + self.feed_forward(query))


# ------------------------------------------------------------------------------------------ upper level
class ThoughtGenerator(nn.Module):
    """The paper's upper level: from the observation history, the mission and its previous thoughts, a
    memory from which an LSTM decoder writes the thought of the step."""

    def __init__(self, config: ThoughtCloningConfig):
        super().__init__()
        text_dim, memory_dim = config.text_dim, config.memory_dim
        self.previous_thought_pool = AttentionPool(memory_dim, text_dim)
        self.history = nn.LSTMCell(text_dim, memory_dim)
        self.history_query = nn.Linear(memory_dim, text_dim)
        self.cross_attention = nn.ModuleList(
            MissionCrossAttentionBlock(text_dim, config.num_attention_heads)
            for _ in range(config.num_cross_attention_blocks)
        )
        self.mission_pool = AttentionPool(memory_dim, text_dim)
        self.film = FiLMStack(text_dim, config.image_dim)
        self.memory = nn.LSTMCell(config.image_dim, memory_dim)
        self.decoder = nn.LSTM(text_dim, memory_dim, batch_first=True)
        self.word_logits = nn.Linear(memory_dim, config.vocab_size)

    def step(
        self,
        visual: torch.FloatTensor,
        mission: tuple[torch.FloatTensor, torch.BoolTensor],
        previous_thought: tuple[torch.FloatTensor, torch.BoolTensor],
        memory: ThoughtCloningMemory,
        first_convolved: torch.FloatTensor | None = None,
        mission_keys_values: list[tuple[torch.FloatTensor, torch.FloatTensor]] | None = None,
    ) -> tuple[torch.FloatTensor, ...]:
        """One step: returns the new (upper_hidden, upper_cell, history_hidden, history_cell).

        ``first_convolved`` and ``mission_keys_values`` are optional precomputations over the whole batch."""
        if mission_keys_values is None:
            mission_keys_values = self.mission_keys_values(mission[0])
        pooled_thought = self.previous_thought_pool(memory.upper_hidden, *previous_thought)
        history_hidden, history_cell = self.history(pooled_thought, (memory.history_hidden, memory.history_cell))
        condition = self.history_query(history_hidden)
        for block, keys_values in zip(self.cross_attention, mission_keys_values, strict=True):
            condition = block(condition, keys_values, mission[1])
        condition = condition + self.mission_pool(memory.upper_hidden, *mission)
        pooled = self.film(visual, condition, first_convolved)
        upper_hidden, upper_cell = self.memory(pooled, (memory.upper_hidden, memory.upper_cell))
        return upper_hidden, upper_cell, history_hidden, history_cell

    def mission_keys_values(self, mission_tokens: torch.FloatTensor) -> list[tuple[torch.FloatTensor, torch.FloatTensor]]:
        return [block.keys_values(mission_tokens) for block in self.cross_attention]

    def decode(
        self, inputs: torch.FloatTensor, hidden: torch.FloatTensor, cell: torch.FloatTensor
    ) -> tuple[torch.FloatTensor, tuple[torch.FloatTensor, torch.FloatTensor]]:
        """Decoder from the memory (N, M) over word embeddings (N, L, D): logits (N, L, V) and the LSTM state."""
        outputs, state = self.decoder(inputs, (hidden[None].contiguous(), cell[None].contiguous()))
        return self.word_logits(outputs), state


# ------------------------------------------------------------------------------------------ lower level
class ActionGenerator(nn.Module):
    """The lower level: the memory attends over the current thought and the mission (summed through two
    linears; mission only for BC), FiLM on the visual map, max-pool, LSTMCell, actor MLP."""

    def __init__(self, config: ThoughtCloningConfig):
        super().__init__()
        text_dim, memory_dim = config.text_dim, config.memory_dim
        self.reads_thoughts = config.has_thought_generator
        if self.reads_thoughts:
            self.thought_pool = AttentionPool(memory_dim, text_dim)
            self.thought_projection = nn.Linear(text_dim, text_dim)
        self.mission_pool = AttentionPool(memory_dim, text_dim)
        self.mission_projection = nn.Linear(text_dim, text_dim)
        self.film = FiLMStack(text_dim, config.image_dim)
        self.memory = nn.LSTMCell(config.image_dim, memory_dim)
        self.actor = nn.Sequential(
            nn.Linear(memory_dim, config.actor_hidden_dim), nn.Tanh(), nn.Linear(config.actor_hidden_dim, config.num_actions)
        )

    def step(
        self,
        visual: torch.FloatTensor,
        mission: tuple[torch.FloatTensor, torch.BoolTensor],
        thought: tuple[torch.FloatTensor, torch.BoolTensor] | None,
        hidden: torch.FloatTensor,
        cell: torch.FloatTensor,
        first_convolved: torch.FloatTensor | None = None,
    ) -> tuple[torch.FloatTensor, torch.FloatTensor, torch.FloatTensor]:
        """One step: (action logits (N, A), lower_hidden, lower_cell)."""
        condition = self.mission_projection(self.mission_pool(hidden, *mission))
        if self.reads_thoughts:
            condition = condition + self.thought_projection(self.thought_pool(hidden, *thought))
        hidden, cell = self.memory(self.film(visual, condition, first_convolved), (hidden, cell))
        return self.actor(hidden), hidden, cell


# ------------------------------------------------------------------------------------------------ model
class ThoughtCloningPreTrainedModel(PreTrainedModel):
    config_class = ThoughtCloningConfig
    base_model_prefix = "thought_cloning"
    main_input_name = "images"
    _no_split_modules = ["ThoughtGenerator", "ActionGenerator"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            # Our word and cell embeddings start at unit scale (they feed GRUs and convs directly); embeddings
            # inside a swapped-in encoder or VLM keep the usual transformer scale.
            ours = module is getattr(self, "word_embedding", None) or module is self.visual_encoder.cell_embedding.embedding
            init.normal_(module.weight, mean=0.0, std=1.0 if ours else std)
            if module.padding_idx is not None:
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, (nn.LSTM, nn.LSTMCell, nn.GRU)):
            bound = 1.0 / math.sqrt(module.hidden_size)  # PyTorch's recurrent default, made explicit
            for parameter in module.parameters():
                init.uniform_(parameter, -bound, bound)
        elif isinstance(module, PretrainedTextEncoder):
            init.copy_(module.word_pieces, module.word_piece_table(self.config))
        if module is self and hasattr(self, VOCABULARY_CHECKSUM):
            # A new model's, or one loaded from weights saved before checksums (from_pretrained warns then).
            init.copy_(self.vocabulary_checksum, vocabulary_checksum(self.config.vocabulary))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any):
        """``PreTrainedModel.from_pretrained`` that refuses, with one line saying why, weights that do not fit:
        an unreadable weights file, missing, unexpected or mis-shaped weights (a ``config.json`` edited or taken
        from another model), or a vocabulary other than the one the weights were trained with.

        Raises:
            ValueError: any of these (``ignore_mismatched_sizes`` is not honoured: a mismatch is refused).
        """
        wants_info = kwargs.pop("output_loading_info", False)
        kwargs.pop("ignore_mismatched_sizes", None)
        name = str(pretrained_model_name_or_path)
        try:
            # Mismatches are collected, not raised, so that they are reported below in one line instead of
            # transformers' table of every weight.
            with _without_load_report():
                model, info = super().from_pretrained(
                    pretrained_model_name_or_path, *args, output_loading_info=True, ignore_mismatched_sizes=True,
                    **kwargs,
                )  # fmt: skip
        except SafetensorError as error:
            raise ValueError(
                f"the weights of {name} cannot be read ({error}): the safetensors file is truncated or is not "
                "one; copy or download the model folder again"
            ) from None
        legacy = VOCABULARY_CHECKSUM in info["missing_keys"]
        problem = _loading_problem(info, {VOCABULARY_CHECKSUM} if legacy else set())
        if problem:
            raise ValueError(
                f"{name} cannot be loaded: its config.json does not fit its weights ({problem}); the config was "
                "edited or belongs to another model: use the config.json saved with these weights"
            )
        if legacy:
            logger.warning(
                f"{name} was saved without a vocabulary checksum (before it was introduced): its vocabulary "
                "cannot be checked against its weights. Save it again with save_pretrained to add one."
            )
        elif not torch.equal(model.vocabulary_checksum.cpu(), vocabulary_checksum(model.config.vocabulary)):
            raise ValueError(
                f"{name} cannot be loaded: the vocabulary in its config.json is not the one its weights were "
                "trained with (the vocabulary checksum saved with the weights differs): the config was edited "
                "(e.g. two words swapped, which would turn \"open red door\" into \"open green door\"); use the "
                "config.json saved with these weights"
            )
        # Weights read from safetensors can sit at unaligned CPU addresses, where kernels take another SIMD
        # path and round differently: re-allocating them makes a loaded model compute bit-identically.
        with torch.no_grad():
            for tensor in (*model.parameters(), *model.buffers()):
                if tensor.device.type == "cpu":
                    tensor.data = tensor.data.clone()
        return (model, info) if wants_info else model


@contextlib.contextmanager
def _without_load_report() -> Iterator[None]:
    """Hold back transformers' per-weight loading report: ``from_pretrained`` states the problem in one line."""
    report_logger = logging.getLogger("transformers.modeling_utils")

    def no_report(record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)

    report_logger.addFilter(no_report)
    try:
        yield
    finally:
        report_logger.removeFilter(no_report)


def _loading_problem(info: Mapping[str, Any], tolerated_missing: set[str]) -> str | None:
    """One line on what did not fit when loading (None when everything did)."""
    parts = []
    mismatched = sorted(info["mismatched_keys"])
    embedding = next((m for m in mismatched if m[0] == "word_embedding.weight"), None)
    if embedding is not None and embedding[1][0] != embedding[2][0]:
        parts.append(f"its vocabulary has {embedding[2][0]} words, the weights were trained with {embedding[1][0]}")
    if mismatched:
        key, saved, expected = mismatched[0]
        parts.append(
            f"{len(mismatched)} weight(s) of another shape, e.g. {key}: {tuple(saved)} in the weights, "
            f"{tuple(expected)} from the config"
        )
    for what, keys in (("missing", set(info["missing_keys"]) - tolerated_missing), ("unexpected", info["unexpected_keys"])):
        if keys:
            shown = ", ".join(sorted(keys)[:3])
            parts.append(f"{len(keys)} {what} weight(s): {shown}{', ...' if len(keys) > 3 else ''}")
    return "; ".join(parts) or None


def _check_vocabulary_checksum(module, state_dict, prefix, local_metadata, strict, missing, unexpected, errors) -> None:
    """``load_state_dict`` pre-hook: a state dict saved before checksums gets the config's; a different one is an
    error (the weights were trained with another vocabulary)."""
    key = prefix + VOCABULARY_CHECKSUM
    expected = vocabulary_checksum(module.config.vocabulary)
    if key not in state_dict:
        state_dict[key] = expected
    elif not torch.equal(state_dict[key].cpu(), expected):
        errors.append(
            f"{key}: these weights were trained with another vocabulary than this model's config (the "
            "vocabulary checksums differ)"
        )


class ThoughtCloningModel(ThoughtCloningPreTrainedModel):
    r"""Thought Cloning agent: upper level (Thought Generator) + lower level (Action Generator).

    Training: [`~ThoughtCloningModel.forward`] over ``(B, T)`` sequences with teacher forcing on or off.
    Rollouts: [`~ThoughtCloningModel.initial_memory`] then [`~ThoughtCloningModel.act`] once per step.
    Inputs come from [`ThoughtCloningProcessor`]; id 0 is padding, masks are derived from the ids.
    With ``config.thought_channel="soft_words"`` (the no-thought-supervision ablation) generated thoughts reach
    the lower level and the thought history as soft words (see [`~ThoughtCloningModel._greedy_thoughts`]).
    """

    def __init__(self, config: ThoughtCloningConfig):
        config.check_thought_channel()
        super().__init__(config)
        self.word_embedding = nn.Embedding(config.vocab_size, config.text_dim, padding_idx=config.pad_token_id)
        self.visual_encoder = VisualEncoder(config)
        if config.upper_level == "text_encoder":
            self.text_encoder = PretrainedTextEncoder(config)
        else:
            self.mission_encoder = BiGRUTextEncoder(config.text_dim)
            if config.has_thought_generator:
                self.thought_encoder = BiGRUTextEncoder(config.text_dim)
        native_upper = config.upper_level in ("native", "text_encoder")
        self.thought_generator = ThoughtGenerator(config) if native_upper else None
        if config.upper_level == "vlm":
            # The Thought Generator is an image-text-to-text model; load pretrained weights with
            # ``load_vlm_weights`` (never inside __init__).
            self.vlm = AutoModelForImageTextToText.from_config(config.vlm_config)
        self.action_generator = ActionGenerator(config)
        self.register_buffer(VOCABULARY_CHECKSUM, vocabulary_checksum(config.vocabulary))
        self._register_load_state_dict_pre_hook(_check_vocabulary_checksum, with_module=True)
        self.post_init()

    # ---------------------------------------------------------------- pretrained text-encoder swap-in
    @classmethod
    def from_text_encoder(
        cls, encoder_name_or_path: str, trainable: bool = False, **config_kwargs: Any
    ) -> ThoughtCloningModel:
        """A fresh agent whose missions and thoughts are read by a pretrained ``AutoModel`` encoder, with the
        encoder's pretrained weights loaded (the rest randomly initialised)."""
        config = ThoughtCloningConfig.with_text_encoder(encoder_name_or_path, trainable=trainable, **config_kwargs)
        model = cls(config)
        model.load_text_encoder_weights(encoder_name_or_path)
        return model

    def load_text_encoder_weights(self, encoder_name_or_path: str) -> None:
        """Copy a pretrained encoder's weights into ``text_encoder`` (strict: every weight must match)."""
        if self.config.upper_level != "text_encoder":
            raise ValueError(f"this model has no pretrained text encoder (upper_level={self.config.upper_level!r})")
        pretrained = AutoModel.from_pretrained(encoder_name_or_path, trust_remote_code=False)
        self.text_encoder.encoder.load_state_dict(pretrained.state_dict(), strict=True)

    def load_vlm_weights(self, vlm_name_or_path: str, **kwargs: Any) -> None:
        """Copy a pretrained image-text-to-text model's weights into ``vlm`` (strict)."""
        if self.config.upper_level != "vlm":
            raise ValueError(f"this model has no VLM upper level (upper_level={self.config.upper_level!r})")
        pretrained = AutoModelForImageTextToText.from_pretrained(vlm_name_or_path, trust_remote_code=False, **kwargs)
        self.vlm.load_state_dict(pretrained.state_dict(), strict=True)

    # ------------------------------------------------------------------------------------ text reading
    def _encode_text(self, ids: torch.LongTensor, encoder: str) -> tuple[torch.FloatTensor, torch.BoolTensor]:
        """(N, L) word ids -> per-token features (N, L', D) and mask; empty rows read as `<bos>`."""
        ids = ids.clone()
        empty = (ids != self.config.pad_token_id).sum(dim=1) == 0
        ids[empty, 0] = self.config.bos_token_id
        if self.config.upper_level == "text_encoder":
            return self.text_encoder(ids)
        mask = ids != self.config.pad_token_id
        return self._encode_embeddings(self.word_embedding(ids), mask, encoder)

    def _encode_embeddings(
        self, embeddings: torch.FloatTensor, mask: torch.BoolTensor, encoder: str
    ) -> tuple[torch.FloatTensor, torch.BoolTensor]:
        """(N, L, D) input embeddings and their (N, L) mask -> per-token features (N, L, D) and the mask."""
        gru = self.mission_encoder if encoder == "mission" else self.thought_encoder
        return gru(embeddings, mask), mask

    def _encode_soft_thought(
        self, ids: torch.LongTensor, embeddings: torch.FloatTensor
    ) -> tuple[torch.FloatTensor, torch.BoolTensor]:
        """A soft-words thought: its (N, L) greedy word ids, which give the mask exactly as for words, and its
        (N, L, D) soft embeddings -> per-token features and mask; an empty thought reads as `<bos>`, as words do."""
        empty_first = torch.zeros_like(ids, dtype=torch.bool)
        empty_first[:, 0] = (ids != self.config.pad_token_id).sum(dim=1) == 0
        bos = self.word_embedding.weight[self.config.bos_token_id]
        embeddings = torch.where(empty_first[..., None], bos.to(embeddings.dtype), embeddings)
        return self._encode_embeddings(embeddings, (ids != self.config.pad_token_id) | empty_first, "thought")

    def _encode_thought(
        self, ids: torch.LongTensor, soft_embeddings: torch.FloatTensor | None
    ) -> tuple[torch.FloatTensor, torch.BoolTensor]:
        """A thought as the lower level or the thought history reads it: its words, or its soft words."""
        if self.config.thought_channel == "soft_words":
            return self._encode_soft_thought(ids, soft_embeddings)
        return self._encode_each(ids, "thought")

    def _previous_thought_embeddings(self, memory: ThoughtCloningMemory) -> torch.FloatTensor | None:
        """The soft words of the previous thought (soft-words models; a memory without them reads its words
        one-hot, i.e. as their word embeddings)."""
        if self.config.thought_channel != "soft_words":
            return None
        if memory.previous_thought_embeddings is not None:
            return memory.previous_thought_embeddings
        return self.word_embedding(memory.previous_thought_ids)

    def _encode_unique(
        self, ids: torch.LongTensor, encoder: str
    ) -> tuple[torch.FloatTensor, torch.BoolTensor, torch.LongTensor]:
        """Encode each distinct row of (N, L) ids once: (U, L', D) features, (U, L') mask, (N,) row -> unique."""
        ids = trim_padding(ids, self.config.pad_token_id)
        unique, inverse = torch.unique(ids, dim=0, return_inverse=True)
        features, mask = self._encode_text(unique, encoder)
        return features, mask, inverse

    def _encode_each(self, ids: torch.LongTensor, encoder: str) -> tuple[torch.FloatTensor, torch.BoolTensor]:
        features, mask, inverse = self._encode_unique(ids, encoder)
        return features[inverse], mask[inverse]

    # ---------------------------------------------------------------------------------------- memory
    def initial_memory(self, batch_size: int, device: torch.device | str | None = None) -> ThoughtCloningMemory:
        """Zero memories (and `<bos>` as the previous thought) for ``batch_size`` episodes starting now."""
        device = device if device is not None else self.device
        dtype = self.word_embedding.weight.dtype

        def zeros() -> torch.FloatTensor:
            return torch.zeros(batch_size, self.config.memory_dim, device=device, dtype=dtype)

        memory = ThoughtCloningMemory(lower_hidden=zeros(), lower_cell=zeros())
        if self.thought_generator is not None:
            memory.upper_hidden, memory.upper_cell = zeros(), zeros()
            memory.history_hidden, memory.history_cell = zeros(), zeros()
        if self.config.has_thought_generator:
            memory.previous_thought_ids = self._bos_rows(batch_size, device)
        if self.config.thought_channel == "soft_words":
            memory.previous_thought_embeddings = self.word_embedding(memory.previous_thought_ids)
        return memory

    def reset_memory(self, memory: ThoughtCloningMemory, episode_starts: torch.BoolTensor) -> ThoughtCloningMemory:
        """``memory`` with the rows where ``episode_starts`` (N,) is True reset to the initial memory."""
        fresh = self.initial_memory(episode_starts.shape[0], device=episode_starts.device)
        starts = episode_starts.to(torch.bool)
        values = {}
        for name, value in memory.items():
            initial = fresh[name]
            if name == "previous_thought_ids":
                width = max(value.shape[1], initial.shape[1])
                value, initial = pad_to_width(value, width), pad_to_width(initial, width)
            elif name == "previous_thought_embeddings":
                width = max(value.shape[1], initial.shape[1])
                value, initial = pad_positions(value, width), pad_positions(initial, width)
            values[name] = torch.where(starts.view(-1, *([1] * (value.dim() - 1))), initial, value)
        return ThoughtCloningMemory(**values)

    def _bos_rows(self, rows: int, device: torch.device | str) -> torch.LongTensor:
        return torch.full((rows, 1), self.config.bos_token_id, dtype=torch.long, device=device)

    # --------------------------------------------------------------------------------------- decoding
    def _decoder_inputs(self, thought_ids: torch.LongTensor) -> torch.FloatTensor:
        """(N, L) thought ids -> embeddings of `<bos>` + words: (N, L + 1, D)."""
        bos = self._bos_rows(thought_ids.shape[0], thought_ids.device)
        return self.word_embedding(torch.cat([bos, thought_ids], dim=1))

    def _greedy_thoughts(
        self, hidden: torch.FloatTensor, cell: torch.FloatTensor, scored_positions: int = 0
    ) -> tuple[torch.LongTensor, torch.FloatTensor | None, torch.FloatTensor | None]:
        """Greedy decoding from the upper memory, stopping once every row has written eos (or after
        ``max_thought_length`` words): thought ids (N, L) padded with 0, eos dropped. Also returns the logits
        of the first ``scored_positions`` positions (N, scored_positions, V), decoding at least that far, so a
        teacher-forcing-off pass can be scored against labels, and, for ``thought_channel="soft_words"``, the
        thought's soft words (N, L, D) (else None): at each kept position the expected word embedding
        ``softmax(logits / soft_thought_temperature) @ word_embedding.weight``, 0 where the words are padding.

        The decoder itself reads its greedy words in both channels (the paper's decoding, so the words
        reported for a soft thought are the ones it decodes to); gradients reach the upper memory through the
        logits of every kept position."""
        limit = max(self.config.max_thought_length + 1, scored_positions)
        eos, pad = self.config.eos_token_id, self.config.pad_token_id
        tokens = self._bos_rows(hidden.shape[0], hidden.device)
        state = (hidden[None].contiguous(), cell[None].contiguous())
        finished = torch.zeros(hidden.shape[0], dtype=torch.bool, device=hidden.device)
        words, all_logits = [], []
        for position in range(limit):
            outputs, state = self.thought_generator.decoder(self.word_embedding(tokens), state)
            logits = self.thought_generator.word_logits(outputs[:, -1])
            tokens = logits.argmax(dim=-1, keepdim=True)
            words.append(torch.where(finished, pad, tokens[:, 0]))
            all_logits.append(logits)
            finished = finished | (tokens[:, 0] == eos)
            if position + 1 >= scored_positions and bool(finished.all()):
                break
        ids = torch.stack(words, dim=1)
        ids = trim_padding(ids.masked_fill(ids == eos, pad)[:, : self.config.max_thought_length], pad, keep=1)
        scored = torch.stack(all_logits[:scored_positions], dim=1) if scored_positions else None
        soft = None
        if self.config.thought_channel == "soft_words":
            # The expected embedding rather than straight-through (one-hot forward, softmax backward): the
            # forward is then the function whose gradient is taken (no biased surrogate), it is the same
            # computation in training and in act(), and the channel is the continuous "latent vector" that
            # the ablation names. Positions after the greedy eos are masked (zeroed) as padding, like words.
            probs = (torch.stack(all_logits[: ids.shape[1]], dim=1) / self.config.soft_thought_temperature).softmax(-1)
            soft = (probs @ self.word_embedding.weight) * (ids != pad)[..., None].to(probs.dtype)
        return ids, scored, soft

    # ---------------------------------------------------------------------------------------- forward
    def forward(
        self,
        images: torch.LongTensor,
        mission_input_ids: torch.LongTensor,
        thought_input_ids: torch.LongTensor | None = None,
        actions: torch.LongTensor | None = None,
        episode_starts: torch.BoolTensor | None = None,
        step_mask: torch.BoolTensor | None = None,
        memory: ThoughtCloningMemory | None = None,
        teacher_forcing: bool = True,
        vlm_input_ids: torch.LongTensor | None = None,
        vlm_attention_mask: torch.LongTensor | None = None,
        vlm_pixel_values: torch.FloatTensor | None = None,
        vlm_labels: torch.LongTensor | None = None,
        return_dict: bool | None = None,
    ) -> ThoughtCloningOutput | tuple:
        r"""Run the agent over ``(B, T)`` sequences.

        Args:
            images (`torch.LongTensor` of shape `(B, T, 7, 7, 3)`): symbolic observations.
            mission_input_ids (`torch.LongTensor` of shape `(B, L)`): mission word ids, padded with 0.
            thought_input_ids (`torch.LongTensor` of shape `(B, T, L)`, *optional*): the demonstrator's thought
                per step (no bos/eos), padded with 0; needed for teacher forcing and for the thought loss.
            actions (`torch.LongTensor` of shape `(B, T)`, *optional*): action labels, -100 on padding steps.
            episode_starts (`torch.BoolTensor` of shape `(B, T)`, *optional*): True where an episode starts
                (memory reset before that step); default: only at t=0 when ``memory`` is None.
            step_mask (`torch.BoolTensor` of shape `(B, T)`, *optional*): valid steps; default ``actions != -100``.
            memory ([`ThoughtCloningMemory`], *optional*): incoming memory (truncated BPTT); default: fresh.
            teacher_forcing (`bool`): True: the ground-truth thoughts feed the decoder, the thought history and
                the lower level; False: the greedy generated thoughts do (native upper levels only: a VLM upper
                level trains teacher-forced and generates in [`act`]), as soft words with
                ``thought_channel="soft_words"``, which must be trained with teacher forcing off (True raises).
            vlm_input_ids, vlm_attention_mask, vlm_pixel_values, vlm_labels: the VLM upper level's prompts and
                targets for the valid steps, in (b, t) order, from [`VLMThoughtPrompter.training_inputs`].
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        config = self.config
        batch, steps = self._check_inputs(images, mission_input_ids, thought_input_ids, actions, episode_starts, step_mask)
        device = images.device
        if episode_starts is None:
            episode_starts = torch.zeros(batch, steps, dtype=torch.bool, device=device)
            if memory is None:
                episode_starts[:, 0] = True
        if memory is None:
            memory = self.initial_memory(batch, device)
        if step_mask is None:
            step_mask = actions != IGNORE_INDEX if actions is not None else torch.ones_like(episode_starts)
        uses_thoughts = config.has_thought_generator
        native_upper = self.thought_generator is not None
        soft_channel = config.thought_channel == "soft_words"
        if soft_channel and teacher_forcing:
            raise ValueError(
                "thought_channel='soft_words' (the no-thought-supervision ablation) never reads the demonstrator's "
                "thoughts: pass teacher_forcing=False"
            )
        if uses_thoughts and teacher_forcing and thought_input_ids is None:
            raise ValueError("teacher forcing needs thought_input_ids (or pass teacher_forcing=False)")
        if not native_upper and uses_thoughts and not teacher_forcing:
            raise ValueError("a VLM upper level trains with teacher forcing; it writes thoughts in act() rollouts")

        # Everything that does not depend on the recurrence, once per batch.
        flat_visual = self.visual_encoder(images.flatten(0, 1))
        visual = flat_visual.unflatten(0, (batch, steps))
        # The first FiLM block of each level convolves the visual map before modulating it: all frames at once.
        lower_convolved = self.action_generator.film.blocks[0].convolve(flat_visual).unflatten(0, (batch, steps))
        if native_upper:
            upper_convolved = self.thought_generator.film.blocks[0].convolve(flat_visual).unflatten(0, (batch, steps))
        mission = self._encode_each(mission_input_ids, "mission")
        if native_upper:
            mission_keys_values = self.thought_generator.mission_keys_values(mission[0])
        if thought_input_ids is not None:
            thought_input_ids = trim_padding(thought_input_ids.flatten(0, 1), config.pad_token_id).unflatten(0, (batch, steps))
        if uses_thoughts and teacher_forcing:
            # One pool of distinct thoughts: the batch's, the incoming previous thoughts, and <bos> alone.
            width = max(thought_input_ids.shape[2], memory.previous_thought_ids.shape[1])
            rows = torch.cat([
                pad_to_width(thought_input_ids.flatten(0, 1), width),
                pad_to_width(memory.previous_thought_ids, width),
                pad_to_width(self._bos_rows(1, device), width),
            ])
            pool_features, pool_mask, pool_index = self._encode_unique(rows, "thought")
            step_index = pool_index[: batch * steps].view(batch, steps)
            incoming_index = pool_index[batch * steps : batch * steps + batch]
            bos_index = pool_index[-1].expand(batch)

        action_logits, upper_states, generated, generated_logits = [], [], [], []
        previous_index = incoming_index if uses_thoughts and teacher_forcing else None
        for t in range(steps):
            starts = episode_starts[:, t]
            if bool(starts.any()):
                memory = self.reset_memory(memory, starts)
            thought = None
            if uses_thoughts:
                if teacher_forcing:
                    previous_index = torch.where(starts, bos_index, previous_index)
                    previous = (pool_features[previous_index], pool_mask[previous_index])
                else:
                    previous = self._encode_thought(
                        memory.previous_thought_ids, self._previous_thought_embeddings(memory)
                    )
                if native_upper:
                    upper_hidden, upper_cell, history_hidden, history_cell = self.thought_generator.step(
                        visual[:, t], mission, previous, memory, upper_convolved[:, t], mission_keys_values
                    )
                    upper_states.append((upper_hidden, upper_cell))
                if teacher_forcing:
                    previous_index = step_index[:, t]
                    thought = (pool_features[previous_index], pool_mask[previous_index])
                    thought_ids = thought_input_ids[:, t]
                else:
                    positions = thought_input_ids.shape[2] + 1 if thought_input_ids is not None else 0
                    thought_ids, logits, soft_thought = self._greedy_thoughts(upper_hidden, upper_cell, positions)
                    generated.append(thought_ids)
                    generated_logits.append(logits)
                    thought = self._encode_thought(thought_ids, soft_thought)
            logits, lower_hidden, lower_cell = self.action_generator.step(
                visual[:, t], mission, thought, memory.lower_hidden, memory.lower_cell, lower_convolved[:, t]
            )
            action_logits.append(logits)
            memory = ThoughtCloningMemory(lower_hidden=lower_hidden, lower_cell=lower_cell)
            if native_upper:
                memory.upper_hidden, memory.upper_cell = upper_hidden, upper_cell
                memory.history_hidden, memory.history_cell = history_hidden, history_cell
            if uses_thoughts:
                memory.previous_thought_ids = thought_ids
            if soft_channel:  # (teacher forcing is off)
                memory.previous_thought_embeddings = soft_thought

        action_logits = torch.stack(action_logits, dim=1)
        thought_logits = generated_thought_ids = None
        if uses_thoughts and not teacher_forcing:
            width = max(ids.shape[1] for ids in generated)
            generated_thought_ids = torch.stack([pad_to_width(ids, width) for ids in generated], dim=1)
            if thought_input_ids is not None:
                thought_logits = torch.stack(generated_logits, dim=1)
        elif native_upper and thought_input_ids is not None:
            # Teacher-forced decoding of every valid step at once, after the recurrence.
            upper_hidden = torch.stack([h for h, _ in upper_states], dim=1)[step_mask]
            upper_cell = torch.stack([c for _, c in upper_states], dim=1)[step_mask]
            valid_logits, _ = self.thought_generator.decode(
                self._decoder_inputs(thought_input_ids[step_mask]), upper_hidden, upper_cell
            )
            thought_logits = valid_logits.new_zeros(batch, steps, *valid_logits.shape[1:])
            thought_logits[step_mask] = valid_logits

        output = ThoughtCloningOutput(
            action_logits=action_logits,
            thought_logits=thought_logits,
            generated_thought_ids=generated_thought_ids,
            memory=memory,
        )
        vlm_nll = None
        if vlm_input_ids is not None:
            if self.config.upper_level != "vlm":
                raise ValueError("vlm_* inputs are for a VLM upper level (upper_level='vlm')")
            vlm_nll = self._vlm_nll(vlm_input_ids, vlm_attention_mask, vlm_pixel_values, vlm_labels)
        if actions is not None:
            self._add_losses(output, actions, thought_input_ids, step_mask, vlm_nll)
        return output if return_dict else output.to_tuple()

    def _vlm_nll(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor,
        pixel_values: torch.FloatTensor,
        labels: torch.LongTensor,
    ) -> torch.FloatTensor:
        """Teacher-forced NLL of the VLM's thoughts, summed over their tokens (eos included), all steps at once."""
        logits = self.vlm(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values).logits
        return F.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )

    def _add_losses(
        self,
        output: ThoughtCloningOutput,
        actions: torch.LongTensor,
        thought_input_ids: torch.LongTensor | None,
        step_mask: torch.BoolTensor,
        vlm_nll: torch.FloatTensor | None = None,
    ) -> None:
        """The paper's per-step loss ``CE(action) - entropy_coef * entropy + thought_loss_weight * NLL(thought)``,
        averaged over valid steps; the thought NLL is summed over the words of each thought (eos included)."""
        config = self.config
        valid = step_mask & (actions != IGNORE_INDEX)
        num_valid = valid.sum().clamp(min=1)
        logits = output.action_logits[valid]
        output.action_loss = F.cross_entropy(logits, actions[valid], reduction="sum") / num_valid
        log_probs = logits.log_softmax(dim=-1)
        output.entropy = -(log_probs.exp() * log_probs).sum() / num_valid
        output.loss = output.action_loss - config.entropy_coef * output.entropy
        if output.thought_logits is not None:
            targets = thought_targets(thought_input_ids, config.eos_token_id, config.pad_token_id)[valid]
            word_logits = output.thought_logits[valid][:, : targets.shape[1]]
            nll = F.cross_entropy(word_logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
            output.thought_loss = nll / num_valid
        elif vlm_nll is not None:
            output.thought_loss = vlm_nll / num_valid
        if output.thought_loss is not None:
            output.loss = output.loss + config.thought_loss_weight * output.thought_loss

    # ------------------------------------------------------------------------------------------- acting
    @torch.no_grad()
    def act(
        self,
        observations: Mapping[str, torch.Tensor],
        memory: ThoughtCloningMemory | None = None,
        thought: Sequence[str | None] | torch.LongTensor | None = None,
        sample: bool = True,
        generator: torch.Generator | None = None,
        vlm_prompter: Any = None,
    ) -> ThoughtCloningActOutput:
        """One step of ``N`` environments.

        Args:
            observations: the processor's output for one step: ``images`` (N, 7, 7, 3) and ``mission_input_ids``
                (N, L); a ``thought_input_ids`` (N, L) entry is read as an injected thought (rows of 0: none).
            memory: from [`initial_memory`] or the previous call (reset finished envs with [`reset_memory`]).
            thought: injected thoughts that replace the generated ones (steering): a list of N strings or None
                (None keeps that env's generated thought), or word ids (N, L). Unknown words raise ValueError.
                A soft-words model reads an injected thought one-hot: exactly its words' embeddings.
            sample: sample the action from its distribution (else argmax).
            vlm_prompter: a [`VLMThoughtPrompter`] (the VLM's tokenizer and image settings), needed when the
                upper level is a VLM; the VLM's words outside our vocabulary reach the lower level as `<unk>`.
        """
        images, mission_ids = observations["images"], observations["mission_input_ids"]
        if images.dim() != 4:
            raise ValueError(f"act() takes one step of N environments: images (N, 7, 7, 3), got {tuple(images.shape)}")
        if thought is None and observations.get("thought_input_ids") is not None:
            thought = observations["thought_input_ids"]
        count = images.shape[0]
        self._check_inputs(images[:, None], mission_ids, None, None, None, None)
        if memory is None:
            memory = self.initial_memory(count, images.device)
        if memory.lower_hidden.shape[0] != count:
            raise ValueError(f"memory holds {memory.lower_hidden.shape[0]} environments, observations {count}")
        visual = self.visual_encoder(images)
        mission = self._encode_each(mission_ids, "mission")
        encoded_thought = thought_ids = thoughts = None
        new_memory = ThoughtCloningMemory()
        if self.config.upper_level == "vlm":
            if vlm_prompter is None:
                raise ValueError("a VLM upper level needs act(..., vlm_prompter=VLMThoughtPrompter(...))")
            prompts = vlm_prompter.generation_inputs(
                images, self.ids_to_text(mission_ids), self.ids_to_text(memory.previous_thought_ids)
            )
            prompts = {k: v.to(images.device) for k, v in prompts.items()}
            written = self.vlm.generate(**prompts, max_new_tokens=self.config.vlm_max_new_tokens, do_sample=False)
            vlm_thoughts = vlm_prompter.decode(written[:, prompts["input_ids"].shape[1] :])
            thought_ids = self.text_to_ids(vlm_thoughts, unknown_words="unk").to(images.device)
            if thought is not None:
                thought_ids, _ = self._inject(thought_ids, thought, count)
            encoded_thought = self._encode_each(thought_ids, "thought")
            thoughts = self.ids_to_text(thought_ids)
            new_memory = ThoughtCloningMemory(previous_thought_ids=thought_ids)
        elif self.config.has_thought_generator:
            previous = self._encode_thought(memory.previous_thought_ids, self._previous_thought_embeddings(memory))
            upper_hidden, upper_cell, history_hidden, history_cell = self.thought_generator.step(
                visual, mission, previous, memory
            )
            thought_ids, _, soft_thought = self._greedy_thoughts(upper_hidden, upper_cell)
            if thought is not None:
                thought_ids, soft_thought = self._inject(thought_ids, thought, count, soft_thought)
            encoded_thought = self._encode_thought(thought_ids, soft_thought)
            thoughts = self.ids_to_text(thought_ids)
            new_memory = ThoughtCloningMemory(
                upper_hidden=upper_hidden, upper_cell=upper_cell, history_hidden=history_hidden,
                history_cell=history_cell, previous_thought_ids=thought_ids, previous_thought_embeddings=soft_thought,
            )
        elif thought is not None:
            raise ValueError("this model has no thought generator (BC): there is no thought to inject")
        logits, new_memory.lower_hidden, new_memory.lower_cell = self.action_generator.step(
            visual, mission, encoded_thought, memory.lower_hidden, memory.lower_cell
        )
        probs = logits.softmax(dim=-1)
        actions = torch.multinomial(probs, 1, generator=generator)[:, 0] if sample else probs.argmax(dim=-1)
        return ThoughtCloningActOutput(
            actions=actions, action_logits=logits, action_probs=probs, thought_ids=thought_ids,
            thoughts=thoughts, memory=new_memory,
        )

    def _inject(
        self,
        generated: torch.LongTensor,
        thought: Sequence[str | None] | torch.LongTensor,
        count: int,
        generated_soft: torch.FloatTensor | None = None,
    ) -> tuple[torch.LongTensor, torch.FloatTensor | None]:
        """Generated thought ids (N, L) with the injected thoughts in their place, and, when ``generated_soft``
        (soft words, N, L, D) is given, the soft words likewise: an injected thought as one-hot words, i.e.
        exactly its word embeddings (0 on padding)."""
        if isinstance(thought, torch.Tensor):
            injected, keep = thought.to(generated.device).long(), (thought != self.config.pad_token_id).any(dim=1)
        else:
            if isinstance(thought, str) or len(thought) != count:
                raise ValueError(f"thought must be a list of {count} strings (or None to keep the generated one)")
            empty = [text for text in thought if text is not None and not text.replace(",", " ").split()]
            if empty:
                raise ValueError(
                    f"an injected thought needs at least one word, got {empty[0]!r} (None keeps that environment's "
                    "generated thought)"
                )
            injected = self.text_to_ids([text or "" for text in thought]).to(generated.device)
            keep = torch.tensor([text is not None for text in thought], device=generated.device)
        if injected.shape[0] != count:
            raise ValueError(f"{injected.shape[0]} injected thoughts for {count} environments")
        width = max(injected.shape[1], generated.shape[1])
        injected = pad_to_width(injected, width)
        ids = torch.where(keep[:, None], injected, pad_to_width(generated, width))
        if generated_soft is None:
            return ids, None
        one_hot = self.word_embedding(injected).to(generated_soft.dtype)
        return ids, torch.where(keep[:, None, None], one_hot, pad_positions(generated_soft, width))

    # ------------------------------------------------------------------------------------- word <-> id
    def text_to_ids(self, texts: Sequence[str], unknown_words: str = "error") -> torch.LongTensor:
        """Thoughts as word ids (N, L), padded with 0; a word outside the vocabulary raises ValueError, or
        becomes `<unk>` with ``unknown_words="unk"``."""
        index = {word: i for i, word in enumerate(self.config.vocabulary)}
        rows = []
        for text in texts:
            words = text.replace(",", " , ").split()
            unknown = [word for word in words if word not in index]
            if unknown and unknown_words == "error":
                raise ValueError(f"thought {text!r} has words outside the vocabulary: {unknown}")
            rows.append([index.get(word, self.config.unk_token_id) for word in words])
        ids = torch.zeros(len(rows), max([1, *map(len, rows)]), dtype=torch.long)
        for row, words in enumerate(rows):
            ids[row, : len(words)] = torch.tensor(words, dtype=torch.long)
        return ids

    def ids_to_text(self, ids: torch.LongTensor) -> list[str]:
        """Word ids (N, L) -> strings; special tokens are dropped."""
        special = {self.config.pad_token_id, self.config.bos_token_id, self.config.eos_token_id}
        vocabulary = self.config.vocabulary
        return [
            " ".join(vocabulary[i] for i in row if i not in special).replace(" ,", ",") for row in ids.tolist()
        ]

    # ------------------------------------------------------------------------------------------ checks
    def _check_inputs(self, images, mission_ids, thought_ids, actions, episode_starts, step_mask) -> tuple[int, int]:
        if images.dim() != 5 or tuple(images.shape[2:]) != (7, 7, 3):
            raise ValueError(f"images must have shape (B, T, 7, 7, 3), got {tuple(images.shape)}")
        if images.is_floating_point():
            raise ValueError("images must hold the integer symbolic grid (object, colour, state), not floats")
        batch, steps = images.shape[:2]
        if int(images.min()) < 0 or int(images.max()) >= self.config.max_cell_value:
            raise ValueError(f"image values must lie in [0, {self.config.max_cell_value})")
        if mission_ids.dim() != 2 or mission_ids.shape[0] != batch:
            raise ValueError(f"mission_input_ids must have shape ({batch}, L), got {tuple(mission_ids.shape)}")
        for name, ids in (("mission_input_ids", mission_ids), ("thought_input_ids", thought_ids)):
            if ids is not None and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.config.vocab_size):
                raise ValueError(f"{name} must hold word ids in [0, {self.config.vocab_size})")
        if thought_ids is not None and (thought_ids.dim() != 3 or tuple(thought_ids.shape[:2]) != (batch, steps)):
            raise ValueError(f"thought_input_ids must have shape ({batch}, {steps}, L), got {tuple(thought_ids.shape)}")
        for name, tensor in (("actions", actions), ("episode_starts", episode_starts), ("step_mask", step_mask)):
            if tensor is not None and tuple(tensor.shape) != (batch, steps):
                raise ValueError(f"{name} must have shape ({batch}, {steps}), got {tuple(tensor.shape)}")
        return batch, steps


# ---------------------------------------------------------------------------------------------- helpers
def trim_padding(ids: torch.LongTensor, pad_id: int, keep: int = 1) -> torch.LongTensor:
    """Drop trailing columns that are padding in every row (keeping at least ``keep``)."""
    used = (ids != pad_id).flatten(0, -2).any(dim=0) if ids.numel() else torch.zeros(0, dtype=torch.bool)
    width = max(keep, int(used.nonzero().max()) + 1 if bool(used.any()) else 0)
    return ids[..., :width]


def pad_to_width(ids: torch.LongTensor, width: int, pad_id: int = 0) -> torch.LongTensor:
    return F.pad(ids, (0, width - ids.shape[-1]), value=pad_id) if ids.shape[-1] < width else ids


def pad_positions(embeddings: torch.FloatTensor, width: int) -> torch.FloatTensor:
    """(N, L, D) -> (N, width, D), zeros appended along the positions."""
    return F.pad(embeddings, (0, 0, 0, width - embeddings.shape[1])) if embeddings.shape[1] < width else embeddings


def thought_targets(thought_ids: torch.LongTensor, eos_id: int, pad_id: int) -> torch.LongTensor:
    """(..., L) thought ids -> (..., L + 1) decoder targets: the words, eos, then -100."""
    lengths = (thought_ids != pad_id).sum(dim=-1, keepdim=True)
    targets = F.pad(thought_ids, (0, 1), value=pad_id).scatter(-1, lengths, eos_id)
    positions = torch.arange(targets.shape[-1], device=targets.device)
    return targets.masked_fill(positions > lengths, IGNORE_INDEX)
