"""Training metrics computed from a window's model output (no gradients)."""

from __future__ import annotations

import torch

from hf_thought_cloning.modeling_thought_cloning import thought_targets, trim_padding


def thought_word_positions(
    thought_logits: torch.Tensor,
    thought_input_ids: torch.LongTensor,
    mask: torch.BoolTensor,
    eos_id: int,
    pad_id: int,
    free_running: bool = False,
) -> tuple[torch.BoolTensor, torch.BoolTensor]:
    """Per masked step and target position, ``(right, counted)``, both (steps, W'): the greedy words (eos
    included) against the demonstrator's thoughts at ``mask`` steps.

    ``thought_logits`` (B, T, W, V) scores W word positions; ``thought_input_ids`` (B, T, L) is the window's
    slice of the batch, whose padding columns may outnumber its longest thought (the model trims them, so W can
    be shorter than L + 1). Targets are built from the trimmed ids, as the model does; a target position the
    logits do not reach counts as wrong. ``free_running``: the logits come from a pass without teacher forcing,
    where position j follows the decoder's own first j words; its thought ends at its first eos, so the
    positions after it count as wrong (what the decoder goes on to predict is not part of the thought).
    """
    batch, steps = thought_input_ids.shape[:2]
    ids = trim_padding(thought_input_ids.flatten(0, 1), pad_id).unflatten(0, (batch, steps))
    targets = thought_targets(ids, eos_id, pad_id)[mask]
    words = thought_logits[mask].argmax(dim=-1)[:, : targets.shape[1]]
    if free_running:
        is_eos = words == eos_id
        words = words.masked_fill((is_eos.cumsum(dim=1) - is_eos.long()) > 0, -1)
    if words.shape[1] < targets.shape[1]:
        words = torch.nn.functional.pad(words, (0, targets.shape[1] - words.shape[1]), value=-1)
    counted = targets != -100
    return (words == targets) & counted, counted


def thought_word_matches(
    thought_logits: torch.Tensor,
    thought_input_ids: torch.LongTensor,
    mask: torch.BoolTensor,
    eos_id: int,
    pad_id: int,
    free_running: bool = False,
) -> tuple[int, int]:
    """``(correct, counted)`` summed over [`thought_word_positions`]."""
    right, counted = thought_word_positions(thought_logits, thought_input_ids, mask, eos_id, pad_id, free_running)
    return int(right.sum()), int(counted.sum())
