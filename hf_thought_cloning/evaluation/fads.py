"""Future Action Declaration Score (FADS): did the agent say what it was about to do?

For each interaction the agent really performed, FADS asks whether its own thought at that step (the thought
the lower level read before choosing the action, so written before execution) declared the verb and the
object. Choices, documented in docs/EVALUATION.md:

* Only interactions that happened count, found from the environment's state (``InteractionDetector``), not
  from the action id: a ``pickup`` facing nothing or a ``toggle`` on a wall changes nothing and is not an
  interaction. Kinds: ``pickup`` (the carried object changed to X), ``drop`` (X left the hands), ``open`` /
  ``unlock`` (a door in front went from closed / locked to open), ``close`` (a door in front closed).
* Declared verbs, as the thought templates write them: pickup X by "pickup X" or "remove blocking object X";
  drop X by "drop X", "remove blocking object X", or "pickup X to complete pickup mission" (the template of
  the drop after a pickup mission); open/unlock a door by "open C door" or "unlock C door"; close by "close C
  door". The object must match in type and colour; the colour word "a" (written when the mission's
  description has no colour) matches any colour.
* ``lookback`` (default 0) also accepts the thoughts of that many steps before the action.
* Thoughts that were injected (steering) or absent (BC) are not the agent's own: those interactions are
  excluded (counted apart as ``not_own``).
* Each undeclared interaction is also counted by what the same step's thought declared instead
  (``UNDECLARED_REASONS``, from its declaration nearest to the interaction): nothing, the right object with
  another verb, the right verb with another type, colour or object, or another verb and object.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import gymnasium as gym

from dataset_builder.vocabulary import COLORS, OBJECT_TYPES

__all__ = [
    "INTERACTION_KINDS",
    "UNDECLARED_REASONS",
    "Interaction",
    "InteractionDetector",
    "declarations",
    "declares",
    "fads",
    "fads_from_records",
    "undeclared_reason",
]

INTERACTION_KINDS = ("pickup", "drop", "open", "unlock", "close")
UNDECLARED_REASONS = (
    "no_declaration",  # the thought declares no interaction ("go to ...", "explore unseen area", broken text)
    "wrong_verb",  # the right object, a verb that does not announce this interaction
    "wrong_type",  # the right verb and colour, another type of object
    "wrong_colour",  # the right verb and type, another colour
    "wrong_object",  # the right verb, another colour and type
    "wrong_verb_and_object",
)
_VERB_PHRASES = ("remove blocking object", "pickup", "drop", "open", "unlock", "close")
_DECLARATION = re.compile(
    rf"\b({'|'.join(_VERB_PHRASES)}) ({'|'.join((*COLORS, 'a'))}) ({'|'.join(OBJECT_TYPES)})\b(.*)?$"
)
# Which declared verbs announce which interaction kind.
_ANNOUNCES = {
    "pickup": {"pickup", "remove blocking object"},
    "drop": {"drop", "remove blocking object"},
    "open": {"open", "unlock"},
    "unlock": {"open", "unlock"},
    "close": {"close"},
}


@dataclass(frozen=True)
class Interaction:
    step: int
    kind: str  # one of INTERACTION_KINDS
    color: str
    type: str


def declarations(thought: str | None) -> set[tuple[str, str, str]]:
    """(verb, colour, type) declared in a thought; "pickup X to complete pickup mission" also declares the
    drop of X (the template of the drop that follows a pickup mission)."""
    found: set[tuple[str, str, str]] = set()
    if not thought:
        return found
    match = _DECLARATION.search(thought)  # a template thought declares at most one interaction
    if match:
        verb, color, kind, rest = match.groups()
        found.add((verb, color, kind))
        if verb == "pickup" and rest and "to complete pickup mission" in rest:
            found.add(("drop", color, kind))
    return found


def declares(thought: str | None, interaction: Interaction) -> bool:
    """Whether ``thought`` declares the verb and object of ``interaction``."""
    verbs = _ANNOUNCES[interaction.kind]
    return any(
        verb in verbs and kind == interaction.type and color in (interaction.color, "a")
        for verb, color, kind in declarations(thought)
    )


def undeclared_reason(thought: str | None, interaction: Interaction) -> str:
    """What ``thought``, which does not declare ``interaction``, declared instead: one of ``UNDECLARED_REASONS``,
    judged on its declaration that matches the most of verb, type and colour (in that order)."""
    if declares(thought, interaction):
        raise ValueError(f"{thought!r} declares {interaction}: it has no undeclared reason")
    matches = [
        (verb in _ANNOUNCES[interaction.kind], kind == interaction.type, color in (interaction.color, "a"))
        for verb, color, kind in declarations(thought)
    ]
    if not matches:
        return "no_declaration"
    verb_right, type_right, colour_right = max(matches)
    if not verb_right:
        return "wrong_verb" if type_right and colour_right else "wrong_verb_and_object"
    if type_right:
        return "wrong_colour"
    return "wrong_type" if colour_right else "wrong_object"


def _empty_counts() -> dict:
    return {"actions": 0, "declared": 0, "score": None}


def _finish(counts: dict) -> dict:
    counts["score"] = counts["declared"] / counts["actions"] if counts["actions"] else None
    return counts


def fads(
    traces: Iterable[tuple[Sequence[str | None], Sequence[Interaction]]],
    lookback: int = 0,
    own: Iterable[Sequence[bool]] | None = None,
) -> dict:
    """FADS over episodes.

    Args:
        traces: per episode, its thoughts by step and its interactions (``Interaction.step`` indexes the
            thoughts).
        lookback: also accept a declaration in the thoughts of up to this many earlier steps.
        own: per episode, per step, whether the thought was the agent's own (default: all are).

    Returns:
        ``{"overall": {"actions", "declared", "score"}, "per_kind": {kind: {...}}, "not_own": n, "undeclared":
        {"overall": {reason: n}, "per_kind": {kind: {reason: n}}}}``; a score is None when there was no
        interaction to score; ``undeclared`` counts the undeclared interactions by ``undeclared_reason`` of the
        same step's thought.
    """
    if lookback < 0:
        raise ValueError(f"lookback must be >= 0, got {lookback}")
    overall, per_kind, not_own = _empty_counts(), {kind: _empty_counts() for kind in INTERACTION_KINDS}, 0
    reasons = {kind: dict.fromkeys(UNDECLARED_REASONS, 0) for kind in INTERACTION_KINDS}
    own_flags = iter(own) if own is not None else None
    for thoughts, interactions in traces:
        flags = next(own_flags) if own_flags is not None else [True] * len(thoughts)
        for interaction in interactions:
            if interaction.kind not in per_kind:
                raise ValueError(
                    f"unknown interaction kind {interaction.kind!r}: use one of {INTERACTION_KINDS}"
                )
            if not 0 <= interaction.step < len(thoughts):
                raise ValueError(
                    f"interaction at step {interaction.step} outside a trace of {len(thoughts)} steps"
                )
            if not flags[interaction.step]:
                not_own += 1
                continue
            window = range(max(0, interaction.step - lookback), interaction.step + 1)
            declared = any(flags[step] and declares(thoughts[step], interaction) for step in window)
            for counts in (overall, per_kind[interaction.kind]):
                counts["actions"] += 1
                counts["declared"] += int(declared)
            if not declared:
                reasons[interaction.kind][undeclared_reason(thoughts[interaction.step], interaction)] += 1
    return {
        "overall": _finish(overall),
        "per_kind": {kind: _finish(counts) for kind, counts in per_kind.items()},
        "not_own": not_own,
        "undeclared": {
            "overall": {reason: sum(counts[reason] for counts in reasons.values()) for reason in UNDECLARED_REASONS},
            "per_kind": reasons,
        },
    }


# ------------------------------------------------------------------------------------------ detection
class InteractionDetector:
    """Finds the interactions that happened in one step from the state before and after it."""

    name = "interaction"

    def snapshot(self, env: gym.Env) -> Hashable:
        base = env.unwrapped
        carried = base.carrying
        front_position = tuple(int(v) for v in base.front_pos)  # never off the grid: outer walls surround it
        front = base.grid.get(*front_position)
        door = (
            (front.color, front.is_open, front.is_locked)
            if front is not None and front.type == "door"
            else None
        )
        return (None if carried is None else (carried.color, carried.type), front_position, door)

    def detect(self, before: Hashable, after: Hashable) -> dict | None:
        carried_before, front_before, door_before = before
        carried_after, front_after, door_after = after
        if carried_before != carried_after:
            if carried_after is not None:  # at most one object in hand: a change to X is a pickup of X
                return {"event": "pickup", "color": carried_after[0], "type": carried_after[1]}
            return {"event": "drop", "color": carried_before[0], "type": carried_before[1]}
        # A door changes state only by a toggle, which neither moves nor turns the agent.
        if door_before is not None and door_after is not None and front_before == front_after:
            color, was_open, was_locked = door_before
            if not was_open and door_after[1]:
                return {"event": "unlock" if was_locked else "open", "color": color, "type": "door"}
            if was_open and not door_after[1]:
                return {"event": "close", "color": color, "type": "door"}
        return None


def fads_from_records(records: Sequence, lookback: int = 0) -> dict:
    """FADS of rollout records made with ``detectors=[InteractionDetector()]`` (``run_episodes``), with the
    number of ``episodes`` it was measured on."""
    traces, own = [], []
    for record in records:
        thoughts = [step.thought for step in record.steps]
        interactions = [
            Interaction(event["step"], event["event"], event["color"], event["type"])
            for event in record.events
            if event.get("detector") == InteractionDetector.name
        ]
        traces.append((thoughts, interactions))
        own.append([step.thought_source == "generated" for step in record.steps])
    return {"episodes": len(records), **fads(traces, lookback=lookback, own=own)}
