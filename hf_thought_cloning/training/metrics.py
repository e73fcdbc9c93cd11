"""Training metrics computed from a window's model output (no gradients)."""

from __future__ import annotations

import torch

from hf_thought_cloning.modeling_thought_cloning import thought_targets, trim_padding


def thought_word_matches(
    thought_logits: torch.Tensor, thought_input_ids: torch.LongTensor, mask: torch.BoolTensor, eos_id: int, pad_id: int
) -> tuple[int, int]:
    """``(correct, counted)`` greedy words (eos included) against the demonstrator's thoughts at ``mask`` steps.

    ``thought_logits`` (B, T, W, V) scores W word positions; ``thought_input_ids`` (B, T, L) is the window's
    slice of the batch, whose padding columns may outnumber its longest thought (the model trims them, so W can
    be shorter than L + 1). Targets are built from the trimmed ids, as the model does; a target position the
    logits do not reach counts as wrong.
    """
    batch, steps = thought_input_ids.shape[:2]
    ids = trim_padding(thought_input_ids.flatten(0, 1), pad_id).unflatten(0, (batch, steps))
    targets = thought_targets(ids, eos_id, pad_id)[mask]
    words = thought_logits[mask].argmax(dim=-1)[:, : targets.shape[1]]
    if words.shape[1] < targets.shape[1]:
        words = torch.nn.functional.pad(words, (0, targets.shape[1] - words.shape[1]), value=-1)
    counted = targets != -100
    return int((words == targets)[counted].sum()), int(counted.sum())
