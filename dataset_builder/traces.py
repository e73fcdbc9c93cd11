"""Readable thought traces: consecutive steps that share a thought become one segment."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ACTION_NAMES = ("left", "right", "forward", "pickup", "drop", "toggle", "done")


@dataclass(frozen=True)
class TraceSegment:
    first_step: int
    last_step: int
    thought: str
    actions: tuple[str, ...]
    noisy: bool


def thought_segments(
    thoughts: Sequence[str], actions: Sequence[int], noisy: Sequence[bool] | None = None
) -> list[TraceSegment]:
    """Group steps into segments of one thought (a noise segment is never merged with bot steps)."""
    if len(thoughts) != len(actions) or (noisy is not None and len(noisy) != len(actions)):
        raise ValueError(
            f"trace columns differ in length: {len(thoughts)} thoughts, {len(actions)} actions"
            + (f", {len(noisy)} noisy flags" if noisy is not None else "")
        )
    flags = list(noisy) if noisy is not None else [False] * len(actions)
    segments: list[TraceSegment] = []
    start = 0
    for step in range(1, len(thoughts) + 1):
        if step == len(thoughts) or thoughts[step] != thoughts[start] or flags[step] != flags[start]:
            names = tuple(ACTION_NAMES[int(a)] for a in actions[start:step])
            segments.append(TraceSegment(start, step - 1, thoughts[start], names, flags[start]))
            start = step
    return segments


def format_trace(
    mission: str, thoughts: Sequence[str], actions: Sequence[int], noisy: Sequence[bool] | None = None
) -> str:
    """The mission, then one line per segment: step range, thought, actions."""
    lines = [f"mission: {mission}"]
    for segment in thought_segments(thoughts, actions, noisy):
        steps = (
            f"{segment.first_step}-{segment.last_step}"
            if segment.last_step > segment.first_step
            else f"{segment.first_step}"
        )
        marker = " [noise]" if segment.noisy else ""
        lines.append(
            f"  steps {steps:>7}  {segment.thought}{marker}\n  {'':13}  -> {' '.join(segment.actions)}"
        )
    return "\n".join(lines)
