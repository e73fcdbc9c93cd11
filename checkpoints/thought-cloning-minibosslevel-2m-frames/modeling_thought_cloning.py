"""Thought Cloning agent (Hu & Clune, NeurIPS 2023): an upper level that writes a thought at every step and a
lower level that acts on the observation, the mission and that thought.

This module holds the ``PreTrainedModel`` (loading, saving, the vocabulary checksum) and
[`ThoughtCloningModel`], which composes its parts top to bottom: the networks are in
``layers_thought_cloning``, the swappable upper levels (the paper's Thought Generator, a pretrained text
encoder, a VLM, none) and thought channels behind one interface in ``upper_levels_thought_cloning``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
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
from .layers_thought_cloning import (
    IGNORE_INDEX,
    ActionGenerator,
    PretrainedTextEncoder,
    ThoughtCloningMemory,
    VisualEncoder,
    pad_positions,
    pad_to_width,
    thought_targets,
    trim_padding,
)
from .upper_levels_thought_cloning import (
    THOUGHT_CHANNEL_CLASSES,
    UPPER_LEVEL_CLASSES,
    ActingInputs,
    SequenceInputs,
    WordVocabulary,
)

__all__ = [
    "IGNORE_INDEX",
    "ThoughtCloningActOutput",
    "ThoughtCloningMemory",
    "ThoughtCloningModel",
    "ThoughtCloningOutput",
    "ThoughtCloningPreTrainedModel",
    "thought_targets",
    "trim_padding",
]

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
        hub_kwargs = {key: kwargs[key] for key in ("cache_dir", "revision", "token", "local_files_only") if key in kwargs}
        model.upper_level.load_files(name, **hub_kwargs)
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
    r"""Thought Cloning agent: an upper level (Thought Generator) that writes a thought at every step and a lower
    level (Action Generator) that acts on the observation, the mission and that thought.

    The config's ``upper_level`` and ``thought_channel`` are resolved here, once, into three components (see
    ``upper_levels_thought_cloning``): ``text_reader`` (what both levels read of words), ``thought_channel`` (how a
    thought reaches the lower level) and ``upper_level`` (the Thought Generator); ``forward`` and ``act`` only
    talk to their interface.

    Training: [`~ThoughtCloningModel.forward`] over ``(B, T)`` sequences with teacher forcing on or off.
    Rollouts: [`~ThoughtCloningModel.initial_memory`] then [`~ThoughtCloningModel.act`] once per step.
    Inputs come from [`ThoughtCloningProcessor`]; id 0 is padding, masks are derived from the ids.
    """

    def __init__(self, config: ThoughtCloningConfig):
        config.check_thought_channel()
        super().__init__(config)
        self.word_embedding = nn.Embedding(config.vocab_size, config.text_dim, padding_idx=config.pad_token_id)
        self.visual_encoder = VisualEncoder(config)
        upper_level_class = UPPER_LEVEL_CLASSES[config.upper_level]
        self.words = WordVocabulary(config)
        self.text_reader = upper_level_class.reader_class(config, self.word_embedding, upper_level_class.writes_thoughts)
        self.thought_channel = THOUGHT_CHANNEL_CLASSES[config.thought_channel](config, self.text_reader, self.word_embedding)
        self.upper_level = upper_level_class(config, self.word_embedding, self.text_reader, self.thought_channel, self.words)
        # The components' modules sit on the model under their own names: the weights' keys of every model folder.
        for name, module in (*self.text_reader.modules.items(), *self.upper_level.modules.items()):
            self.add_module(name, module)
        self.action_generator = ActionGenerator(config)
        self.register_buffer(VOCABULARY_CHECKSUM, vocabulary_checksum(config.vocabulary))
        self._register_load_state_dict_pre_hook(_check_vocabulary_checksum, with_module=True)
        self.post_init()

    # ------------------------------------------------------------------------- pretrained swap-ins
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

    @classmethod
    def from_vlm(
        cls, vlm_name_or_path: str, prompter_settings: Mapping[str, Any] | None = None, **config_kwargs: Any
    ) -> ThoughtCloningModel:
        """A fresh agent whose Thought Generator is the pretrained image-text-to-text model at
        ``vlm_name_or_path`` (weights loaded strictly, the lower level randomly initialised), with its prompter
        built from the VLM's tokenizer and image processor (``prompter_settings``: see [`VLMThoughtPrompter`])."""
        from transformers import AutoConfig

        from .processing_thought_cloning import VLMThoughtPrompter

        vlm_config = AutoConfig.from_pretrained(vlm_name_or_path, trust_remote_code=False)
        model = cls(ThoughtCloningConfig(upper_level="vlm", vlm_config=vlm_config, **config_kwargs))
        model.load_vlm_weights(vlm_name_or_path)
        model.vlm_prompter = VLMThoughtPrompter.from_vlm(vlm_name_or_path, vlm_config, **(prompter_settings or {}))
        return model

    def load_vlm_weights(self, vlm_name_or_path: str, **kwargs: Any) -> None:
        """Copy a pretrained image-text-to-text model's weights into ``vlm`` (strict)."""
        if self.config.upper_level != "vlm":
            raise ValueError(f"this model has no VLM upper level (upper_level={self.config.upper_level!r})")
        pretrained = AutoModelForImageTextToText.from_pretrained(vlm_name_or_path, trust_remote_code=False, **kwargs)
        self.vlm.load_state_dict(pretrained.state_dict(), strict=True)

    @property
    def vlm_prompter(self) -> Any:
        """The [`VLMThoughtPrompter`] of a VLM upper level (None for the other upper levels, or when unset)."""
        return getattr(self.upper_level, "prompter", None)

    @vlm_prompter.setter
    def vlm_prompter(self, prompter: Any) -> None:
        if not hasattr(self.upper_level, "prompter"):
            raise ValueError(f"only a VLM upper level has a prompter (upper_level={self.config.upper_level!r})")
        self.upper_level.prompter = prompter

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """``PreTrainedModel.save_pretrained``, plus what the upper level needs beside its weights (a VLM's
        prompter in ``vlm_prompter/``); LoRA adapters are saved merged into the VLM's weights."""
        saved = self.upper_level.weights_for_saving(kwargs.get("state_dict") or self.state_dict())
        if saved is not None:
            kwargs["state_dict"] = saved
        super().save_pretrained(save_directory, *args, **kwargs)
        self.upper_level.save_files(Path(save_directory))

    # ---------------------------------------------------------------------------------------- memory
    def initial_memory(self, batch_size: int, device: torch.device | str | None = None) -> ThoughtCloningMemory:
        """Zero memories (and `<bos>` as the previous thought) for ``batch_size`` episodes starting now."""
        device = device if device is not None else self.device
        dtype = self.word_embedding.weight.dtype

        def zeros() -> torch.FloatTensor:
            return torch.zeros(batch_size, self.config.memory_dim, device=device, dtype=dtype)

        return ThoughtCloningMemory(
            lower_hidden=zeros(), lower_cell=zeros(), **self.upper_level.initial_memory(batch_size, device, dtype)
        )

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
        **vlm_inputs: torch.Tensor,
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
            teacher_forcing (`bool`): True: the ground-truth thoughts feed the thought history and the lower level;
                False: the upper level's own greedy thoughts do (as soft words with ``thought_channel="soft_words"``,
                which must be trained with teacher forcing off; True raises).
            vlm_input_ids, vlm_attention_mask, vlm_pixel_values, vlm_labels, **vlm_inputs: a VLM upper level's
                prompts and targets, one row per valid step in (b, t) order, and any further ``vlm_*`` input of its
                family (``vlm_image_grid_thw``, ``vlm_pixel_attention_mask``, ...), from
                [`VLMThoughtPrompter.window_inputs`]; required with ``actions``, refused when they do not fit.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
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
        vlm_inputs = _vlm_inputs(vlm_input_ids, vlm_attention_mask, vlm_pixel_values, vlm_labels, vlm_inputs)
        if thought_input_ids is not None:
            thought_input_ids = trim_padding(thought_input_ids.flatten(0, 1), self.config.pad_token_id).unflatten(
                0, (batch, steps)
            )

        # Everything that does not depend on the recurrence, once per batch.
        flat_visual = self.visual_encoder(images.flatten(0, 1))
        visual = flat_visual.unflatten(0, (batch, steps))
        # The first FiLM block of each level convolves the visual map before modulating it: all frames at once.
        lower_convolved = self.action_generator.film.blocks[0].convolve(flat_visual).unflatten(0, (batch, steps))
        mission = self.text_reader.encode_each(mission_input_ids, "mission")
        # Per-step views made once, shared by both levels: indexing [:, t] in the loop would make autograd write a
        # zero-filled (B, T, ...) gradient for every step, quadratic in the window length.
        visual_steps, lower_convolved_steps = visual.unbind(1), lower_convolved.unbind(1)
        inputs = SequenceInputs(images, flat_visual, visual_steps, mission, mission_input_ids, thought_input_ids,
                                memory, step_mask, teacher_forcing, vlm_inputs)  # fmt: skip
        self.upper_level.check_forward(inputs, wants_loss=actions is not None)
        sequence = self.upper_level.sequence(inputs)

        action_logits = []
        for t in range(steps):
            starts = episode_starts[:, t]
            if bool(starts.any()):
                memory = self.reset_memory(memory, starts)
            thought, upper_memory = sequence.step(t, memory, starts)
            logits, lower_hidden, lower_cell = self.action_generator.step(
                visual_steps[t], mission, thought, memory.lower_hidden, memory.lower_cell, lower_convolved_steps[t]
            )
            action_logits.append(logits)
            memory = ThoughtCloningMemory(lower_hidden=lower_hidden, lower_cell=lower_cell, **upper_memory)
        thought_logits, generated_thought_ids = sequence.finish(step_mask)

        output = ThoughtCloningOutput(
            action_logits=torch.stack(action_logits, dim=1),
            thought_logits=thought_logits,
            generated_thought_ids=generated_thought_ids,
            memory=memory,
        )
        if actions is not None:
            self._add_losses(output, inputs, actions)
        return output if return_dict else output.to_tuple()

    def _add_losses(self, output: ThoughtCloningOutput, inputs: SequenceInputs, actions: torch.LongTensor) -> None:
        """The paper's per-step loss ``CE(action) - entropy_coef * entropy + thought_loss_weight * NLL(thought)``,
        averaged over valid steps; the thought NLL is summed over the words of each thought (eos included)."""
        config = self.config
        valid = inputs.step_mask & (actions != IGNORE_INDEX)
        num_valid = valid.sum().clamp(min=1)
        logits = output.action_logits[valid]
        output.action_loss = F.cross_entropy(logits, actions[valid], reduction="sum") / num_valid
        log_probs = logits.log_softmax(dim=-1)
        output.entropy = -(log_probs.exp() * log_probs).sum() / num_valid
        output.loss = output.action_loss - config.entropy_coef * output.entropy
        thought_nll = self.upper_level.thought_nll(output.thought_logits, inputs, valid)
        if thought_nll is not None:
            output.thought_loss = thought_nll / num_valid
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
        mission_features: tuple[torch.FloatTensor, torch.BoolTensor] | None = None,
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
            vlm_prompter: a [`VLMThoughtPrompter`] to use instead of the model's own (``model.vlm_prompter``,
                rebuilt by ``from_pretrained``); the VLM's words outside our vocabulary reach the lower level as
                `<unk>`.
            mission_features: the missions as [`encode_missions`] encodes them, (N, L', D) and (N, L'), when the
                caller keeps them for the episode (a mission does not change within one); else encoded here
                from ``mission_input_ids``.
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
        mission = self.encode_missions(mission_ids) if mission_features is None else mission_features
        if mission[0].shape[0] != count or mission[1].shape != mission[0].shape[:2]:
            raise ValueError(
                f"mission_features must be (N, L, D) features and an (N, L) mask for the {count} environments, got "
                f"{tuple(mission[0].shape)} and {tuple(mission[1].shape)}; make them with encode_missions"
            )
        written = self.upper_level.write(ActingInputs(images, mission_ids, visual, mission), memory, vlm_prompter)
        if thought is not None:
            written = self.upper_level.inject(written, thought, count)
        logits, lower_hidden, lower_cell = self.action_generator.step(
            visual, mission, self.upper_level.read(written), memory.lower_hidden, memory.lower_cell
        )
        probs = logits.softmax(dim=-1)
        actions = torch.multinomial(probs, 1, generator=generator)[:, 0] if sample else probs.argmax(dim=-1)
        return ThoughtCloningActOutput(
            actions=actions, action_logits=logits, action_probs=probs, thought_ids=written.ids,
            thoughts=None if written.ids is None else self.ids_to_text(written.ids),
            memory=ThoughtCloningMemory(lower_hidden=lower_hidden, lower_cell=lower_cell,
                                        **self.upper_level.memory_entries(written)),
        )  # fmt: skip

    @torch.no_grad()
    def encode_missions(self, mission_ids: torch.LongTensor) -> tuple[torch.FloatTensor, torch.BoolTensor]:
        """(N, L) mission word ids -> the text reader's per-token features (N, L', D) and mask (N, L'), as
        ``act`` reads them (``mission_features``). A row's features can differ in the last bits with the batch
        it is encoded in (the GRU's matrix products), not beyond."""
        return self.text_reader.encode_each(mission_ids, "mission")

    # ------------------------------------------------------------------------------------- word <-> id
    def text_to_ids(self, texts: Sequence[str], unknown_words: str = "error") -> torch.LongTensor:
        """Thoughts as word ids (N, L), padded with 0; a word outside the vocabulary raises ValueError, or
        becomes `<unk>` with ``unknown_words="unk"``."""
        return self.words.to_ids(texts, unknown_words)

    def ids_to_text(self, ids: torch.LongTensor) -> list[str]:
        """Word ids (N, L) -> strings; special tokens are dropped."""
        return self.words.to_text(ids)

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


def _vlm_inputs(input_ids, attention_mask, pixel_values, labels, others: Mapping[str, torch.Tensor]) -> dict:
    """The ``vlm_*`` inputs given to ``forward``, without their prefix (None dropped)."""
    foreign = sorted(name for name in others if not name.startswith("vlm_"))
    if foreign:
        raise TypeError(f"forward() got unexpected keyword arguments {foreign}")
    named = {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values, "labels": labels}
    named.update({name[len("vlm_") :]: value for name, value in others.items()})
    return {name: value for name, value in named.items() if value is not None}
