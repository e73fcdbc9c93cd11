"""The trainer's thought word accuracy on windows whose thought padding is wider than their longest thought."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hf_thought_cloning.training.metrics import thought_word_matches

EOS, PAD, VOCAB = 2, 0, 9


def logits_for(words: list[list[list[int]]]) -> torch.Tensor:
    """(B, T, W, V) logits whose argmax is ``words``."""
    return F.one_hot(torch.tensor(words), VOCAB).float()


def test_padding_columns_beyond_the_longest_thought_are_trimmed_like_the_model():
    # A window of 2 steps: thoughts "5 6" and "7", padded to 4 columns (the batch's width, not the window's).
    ids = torch.tensor([[[5, 6, PAD, PAD], [7, PAD, PAD, PAD]]])
    mask = torch.tensor([[True, True]])
    # The model trims to 2 columns and scores 3 positions: words then eos (targets 5 6 eos / 7 eos -).
    logits = logits_for([[[5, 6, EOS], [7, 3, 4]]])  # step 1 predicts 3 instead of eos
    assert thought_word_matches(logits, ids, mask, EOS, PAD) == (4, 5)
    # Logits that stop short of a target position count it as wrong (never silently dropped).
    assert thought_word_matches(logits[:, :, :2], ids, mask, EOS, PAD) == (3, 5)
    # Masked steps are not counted.
    assert thought_word_matches(logits, ids, torch.tensor([[True, False]]), EOS, PAD) == (3, 3)


def test_without_teacher_forcing_a_thought_ends_at_its_own_eos():
    # Target "5 6" then eos; the free-running decoder writes "5" eos and then (after its thought ended) "eos".
    ids = torch.tensor([[[5, 6, PAD]]])
    mask = torch.tensor([[True]])
    logits = logits_for([[[5, EOS, EOS]]])
    # Teacher-forced logits score every position on its own: 5 and the final eos are right.
    assert thought_word_matches(logits, ids, mask, EOS, PAD) == (2, 3)
    # Free running, the thought "5" ended at position 1: the eos predicted after it is not part of it.
    assert thought_word_matches(logits, ids, mask, EOS, PAD, free_running=True) == (1, 3)
    # An exact free-running thought scores fully.
    assert thought_word_matches(logits_for([[[5, 6, EOS]]]), ids, mask, EOS, PAD, free_running=True) == (3, 3)
