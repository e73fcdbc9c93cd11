"""The paper's schedules as pure functions of training progress, so a resumed run recomputes them exactly."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def teacher_forcing_ratio(epoch: int, stop_teacher_forcing_epoch: int, epochs: int) -> float:
    """Probability that a batch of ``epoch`` (0-based) is teacher-forced.

    1 for the first ``stop_teacher_forcing_epoch`` epochs, then a linear decay that reaches 0 at the last epoch:
    ``max(0, 1 - (epoch - stop + 1) / (epochs - stop))`` (the paper's schedule).
    """
    if epoch < stop_teacher_forcing_epoch:
        return 1.0
    if epochs <= stop_teacher_forcing_epoch:
        return 0.0
    return max(0.0, 1.0 - (epoch - stop_teacher_forcing_epoch + 1) / (epochs - stop_teacher_forcing_epoch))


def learning_rate(
    update: int,
    updates_per_epoch: int,
    base_learning_rate: float,
    warmup_epochs: float,
    halving_epochs: Sequence[int] = (),
) -> float:
    """Learning rate of optimiser update ``update`` (0-based): linear warm-up over ``warmup_epochs``, then
    halved once at each epoch listed in ``halving_epochs`` (the paper: 5 epochs of warm-up, halved at 50)."""
    epoch = update / updates_per_epoch
    warmup = min(1.0, (update + 1) / max(1.0, warmup_epochs * updates_per_epoch)) if warmup_epochs > 0 else 1.0
    halvings = sum(1 for at in halving_epochs if epoch >= at)
    return base_learning_rate * warmup * 0.5**halvings


def batch_is_teacher_forced(ratio: float, seed: int, update: int) -> bool:
    """One draw per batch from a generator keyed by (seed, update): identical on every process and on resume."""
    if ratio >= 1.0:
        return True
    if ratio <= 0.0:
        return False
    return bool(np.random.default_rng([seed, update, 0x7F]).random() < ratio)


def samples_teacher_forced(ratio: float, seed: int, update: int, count: int) -> np.ndarray:
    """Per-episode draws for the per-sample teacher-forcing option (keyed like ``batch_is_teacher_forced``)."""
    return np.random.default_rng([seed, update, 0x7E]).random(count) < ratio
