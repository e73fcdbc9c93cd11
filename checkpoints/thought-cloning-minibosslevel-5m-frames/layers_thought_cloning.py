"""The networks of the Thought Cloning agent (Hu & Clune, NeurIPS 2023): building blocks (visual encoder, FiLM,
attention pooling, text encoders), the paper's Thought Generator network and the Action Generator (lower level).

Shapes: ``B`` batch of episodes (or environments), ``T`` time steps, ``L`` words, ``V`` vocabulary size,
``A`` actions, ``M`` memory_dim, ``D`` text_dim, ``C`` image_dim.

Fixes of the original implementation: every attention takes a padding mask; normalisation is GroupNorm
with one group (LayerNorm over channels and cells), which has no running statistics, so the no-grad pass
that computes memories before a truncated-BPTT window cannot change the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoModel
from transformers.utils import ModelOutput

from .configuration_thought_cloning import ThoughtCloningConfig

IGNORE_INDEX = -100


# -------------------------------------------------------------------------------------- recurrent state
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
            nn.Conv2d(dim, dim, 3, padding=1),
            channel_norm(dim),
            nn.ReLU(),
            nn.Conv2d(dim, dim, 3, padding=1),
            channel_norm(dim),
            nn.ReLU(),
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
            convolved = (
                first_convolved if index == 0 and first_convolved is not None else block.convolve(features)
            )
            features = block.modulate(features, convolved, condition)
        return features.amax(dim=(2, 3))


class AttentionPool(nn.Module):
    """One query vector (from a memory) attends over padded tokens: (N, Q), (N, L, D), (N, L) -> (N, D)."""

    def __init__(self, query_dim: int, token_dim: int):
        super().__init__()
        self.query = nn.Linear(query_dim, token_dim)
        self.scale = 1.0 / math.sqrt(token_dim)

    def forward(
        self, state: torch.FloatTensor, tokens: torch.FloatTensor, mask: torch.BoolTensor
    ) -> torch.FloatTensor:
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
        packed = nn.utils.rnn.pack_padded_sequence(
            embeddings, lengths, batch_first=True, enforce_sorted=False
        )
        outputs, _ = self.gru(packed)
        outputs, _ = nn.utils.rnn.pad_packed_sequence(
            outputs, batch_first=True, total_length=embeddings.shape[1]
        )
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
        order = torch.sort(
            (~valid).to(torch.int8), dim=1, stable=True
        ).indices  # valid pieces first, in order
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
        self,
        query: torch.FloatTensor,
        keys_values: tuple[torch.FloatTensor, torch.FloatTensor],
        mask: torch.BoolTensor,
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
        history_hidden, history_cell = self.history(
            pooled_thought, (memory.history_hidden, memory.history_cell)
        )
        condition = self.history_query(history_hidden)
        for block, keys_values in zip(self.cross_attention, mission_keys_values, strict=True):
            condition = block(condition, keys_values, mission[1])
        condition = condition + self.mission_pool(memory.upper_hidden, *mission)
        pooled = self.film(visual, condition, first_convolved)
        upper_hidden, upper_cell = self.memory(pooled, (memory.upper_hidden, memory.upper_cell))
        return upper_hidden, upper_cell, history_hidden, history_cell

    def mission_keys_values(
        self, mission_tokens: torch.FloatTensor
    ) -> list[tuple[torch.FloatTensor, torch.FloatTensor]]:
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
            nn.Linear(memory_dim, config.actor_hidden_dim),
            nn.Tanh(),
            nn.Linear(config.actor_hidden_dim, config.num_actions),
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
    return (
        F.pad(embeddings, (0, 0, 0, width - embeddings.shape[1]))
        if embeddings.shape[1] < width
        else embeddings
    )


def thought_targets(thought_ids: torch.LongTensor, eos_id: int, pad_id: int) -> torch.LongTensor:
    """(..., L) thought ids -> (..., L + 1) decoder targets: the words, eos, then -100."""
    lengths = (thought_ids != pad_id).sum(dim=-1, keepdim=True)
    targets = F.pad(thought_ids, (0, 1), value=pad_id).scatter(-1, lengths, eos_id)
    positions = torch.arange(targets.shape[-1], device=targets.device)
    return targets.masked_fill(positions > lengths, IGNORE_INDEX)
