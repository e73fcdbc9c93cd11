"""Verbalised thoughts of minigrid's ``BabyAIBot``.

``ThoughtBot`` is the installed bot, unchanged in what it plans and does, plus two things:

* every subgoal gets a ``note`` (its purpose) at the moment it is pushed. The bot pushes subgoals in
  a handful of fixed patterns (a mission instruction, a locked door, a blocker in the path, ...); we
  watch the stack, see which subgoal pushed what, and name the pattern (reference section 3).
* ``thought()`` turns the top of the stack into a sentence with the reference templates. A stack the
  templates do not cover raises ``ThoughtTemplateError`` instead of inventing a sentence.
"""

from __future__ import annotations

from dataclasses import dataclass

from minigrid.core.world_object import WorldObj
from minigrid.envs.babyai.core.verifier import GoToInstr, ObjDesc, OpenInstr, PickupInstr, PutNextInstr
from minigrid.utils.baby_ai_bot import (
    BabyAIBot,
    CloseSubgoal,
    DropSubgoal,
    ExploreSubgoal,
    GoNextToSubgoal,
    OpenSubgoal,
    PickupSubgoal,
    Subgoal,
)


class ThoughtTemplateError(RuntimeError):
    """The bot reached a plan that the thought templates do not describe."""


# Notes (purposes), as the reference table spells them.
EXPLORE = "explore"
TO_EXPLORE = "to explore"
TO_OPEN_IT = "to open it"
TO_PICK_IT_UP = "to pick it up"
TO_DROP_IT = "to drop it"
TO_DROP_IT_TEMPORARY = "to drop it temporary"
TO_FIND_A_KEY = "to find a key"
TO_UNLOCK_THE_DOOR = "to unlock the door"
GOTO_MISSION = "to complete GoTo mission"
OPEN_MISSION = "to complete open mission"
PICKUP_MISSION = "to complete pickup mission"
AFTER_PICKUP_MISSION = "after pickup mission"
PUTNEXT_MISSION = "to complete PutNext mission"
AFTER_OPEN_THE_DOOR = "after open the door"
PICK_UP_PREVIOUS_CARRYING = "to pick up previous carrying"
RESUME_PREVIOUS_CARRYING = "resume previous carrying"
TEMPORARY_TO_FIND_THE_KEY = "temporary to find the key"
PLACE_BLOCKING_OBJECT = "to place blocking object"
REMOVE_BLOCKING_OBJECT = "to remove blocking object"
TEMPORARY_REMOVE_BLOCKING_OBJECT = "temporary to remove blocking object"


@dataclass(frozen=True)
class ObjectRef:
    """What a sentence says about an object: colour ("a" when unknown) and type."""

    color: str
    type: str

    @property
    def words(self) -> str:
        return f"{self.color} {self.type}"

    @classmethod
    def of(cls, thing) -> ObjectRef | None:
        if isinstance(thing, ObjDesc):
            return cls(thing.color or "a", thing.type)
        if isinstance(thing, WorldObj):
            return cls(thing.color, thing.type)
        return None


def _kind(subgoal: Subgoal) -> str:
    return type(subgoal).__name__.removesuffix("Subgoal")


def _set_notes(subgoals: list[Subgoal], notes) -> None:
    for subgoal, note in zip(subgoals, notes, strict=True):
        subgoal.note = note


class _WatchedStack(list):
    """The bot's subgoal stack; remembers what was pushed since the last ``take_pushed``, and hands every
    pushed subgoal to ``on_push`` (the bot wraps its replanning steps there)."""

    def __init__(self, items, on_push):
        super().__init__(items)
        self.pushed: list[Subgoal] = []
        self.on_push = on_push
        for subgoal in self:
            on_push(subgoal)

    def append(self, subgoal: Subgoal) -> None:
        subgoal.note = getattr(subgoal, "note", None)
        self.on_push(subgoal)
        self.pushed.append(subgoal)
        super().append(subgoal)

    def take_pushed(self) -> list[Subgoal]:
        pushed, self.pushed = self.pushed, []
        return pushed


class ThoughtBot(BabyAIBot):
    """minigrid's ``BabyAIBot`` that also says what it is thinking (``thought()``) at every step.

    Use exactly like the installed bot: ``action = bot.replan(action_taken)``, then
    ``bot.thought()`` is the intent behind that action.
    """

    # The installed bot assigns ``self.stack = []`` in ``__init__``; route it into a watched stack.
    @property
    def stack(self) -> _WatchedStack:
        return self._stack

    @stack.setter
    def stack(self, items) -> None:
        self._stack = _WatchedStack(items, self._watch)

    def _process_instr(self, instr) -> None:
        self.stack.take_pushed()
        super()._process_instr(instr)  # recurses through this method for Before/After/And
        pushed = self.stack.take_pushed()
        if isinstance(instr, GoToInstr):
            _set_notes(pushed, [GOTO_MISSION])
        elif isinstance(instr, OpenInstr):
            _set_notes(pushed, [OPEN_MISSION, TO_OPEN_IT])
        elif isinstance(instr, PickupInstr):
            _set_notes(pushed, [AFTER_PICKUP_MISSION, PICKUP_MISSION, TO_PICK_IT_UP])
        elif isinstance(instr, PutNextInstr):
            _set_notes(pushed, [PUTNEXT_MISSION, TO_DROP_IT, PUTNEXT_MISSION, TO_PICK_IT_UP])
        elif pushed:
            raise ThoughtTemplateError(f"instruction {type(instr).__name__} pushed subgoals directly")

    def replan(self, action_taken=None):
        action = super().replan(action_taken)
        self.stack.take_pushed()
        return action

    # Watching: each replan step of a subgoal is wrapped (when it is pushed) so that what it pushes gets notes.
    def _watch(self, subgoal: Subgoal) -> None:
        if getattr(subgoal, "_watched", False):
            return
        subgoal._watched = True
        before, after = subgoal.replan_before_action, subgoal.replan_after_action

        def replan_before_action():
            carrying, fwd_cell = subgoal.carrying, subgoal.fwd_cell
            self.stack.take_pushed()
            action = before()
            self._annotate_before(subgoal, self.stack.take_pushed(), carrying, fwd_cell)
            return action

        def replan_after_action(action_taken):
            self.stack.take_pushed()
            after(action_taken)
            self._annotate_after(subgoal, self.stack.take_pushed(), action_taken)

        subgoal.replan_before_action = replan_before_action
        subgoal.replan_after_action = replan_after_action

    def _annotate_before(self, actor: Subgoal, pushed: list[Subgoal], carrying, fwd_cell) -> None:
        if not pushed:
            return
        kinds = [_kind(s) for s in pushed]
        pattern = None
        if isinstance(actor, OpenSubgoal):
            if kinds == ["Pickup", "GoNextTo", "Open", "GoNextTo", "Pickup", "GoNextTo", "Drop", "GoNextTo"]:
                pattern = [
                    PICK_UP_PREVIOUS_CARRYING,
                    carrying,
                    actor.note,
                    TO_OPEN_IT,
                    TO_UNLOCK_THE_DOOR,
                    TO_FIND_A_KEY,
                    TEMPORARY_TO_FIND_THE_KEY,
                    TO_DROP_IT_TEMPORARY,
                ]
            elif kinds == ["Open", "GoNextTo", "Pickup", "GoNextTo"]:
                pattern = [actor.note, TO_OPEN_IT, TO_UNLOCK_THE_DOOR, TO_FIND_A_KEY]
            elif kinds == ["Close"]:
                pattern = [None]
            elif kinds == ["Open"]:  # locked door faced with its key: same purpose, reason "Unlock"
                pattern = [actor.note]
        elif isinstance(actor, GoNextToSubgoal):
            if kinds == ["Explore"]:
                pattern = [None]
            elif kinds == ["GoNextTo", "Pickup", "GoNextTo"]:  # target is a locked door
                pattern = [TO_OPEN_IT, TO_UNLOCK_THE_DOOR, TO_FIND_A_KEY]
            elif kinds == ["GoNextTo"]:  # PutNext target with an open door in front
                pattern = [TO_DROP_IT]
            elif kinds == ["Open"]:  # a closed door on the path
                pattern = [None]
            elif kinds == [
                "Pickup",
                "GoNextTo",
                "Drop",
                "GoNextTo",
                "Pickup",
                "GoNextTo",
                "Drop",
                "GoNextTo",
            ]:
                pattern = [
                    RESUME_PREVIOUS_CARRYING,
                    carrying,
                    PLACE_BLOCKING_OBJECT,
                    TO_DROP_IT,
                    REMOVE_BLOCKING_OBJECT,
                    fwd_cell,
                    TEMPORARY_REMOVE_BLOCKING_OBJECT,
                    TO_DROP_IT_TEMPORARY,
                ]
            elif kinds == ["Drop", "GoNextTo", "Pickup"]:
                pattern = [PLACE_BLOCKING_OBJECT, TO_DROP_IT, REMOVE_BLOCKING_OBJECT]
        elif isinstance(actor, ExploreSubgoal):
            if kinds == ["GoNextTo"]:
                pattern = [EXPLORE]
            elif kinds == ["Open", "GoNextTo"]:
                pattern = [TO_EXPLORE, TO_OPEN_IT]
        if pattern is None:
            raise ThoughtTemplateError(f"{_kind(actor)} pushed an unknown pattern {kinds}")
        _set_notes(pushed, pattern)

    def _annotate_after(self, actor: Subgoal, pushed: list[Subgoal], action_taken) -> None:
        if not pushed:
            return
        kinds = [_kind(s) for s in pushed]
        unlocked = (
            isinstance(actor, OpenSubgoal)
            and actor.reason == "Unlock"
            and (action_taken is None or action_taken == actor.actions.toggle)
        )
        if unlocked and kinds == ["Drop", "GoNextTo"]:
            _set_notes(pushed, [AFTER_OPEN_THE_DOOR, TO_DROP_IT])
        else:  # undoing an action the agent took against the plan: no purpose to tell
            _set_notes(pushed, [None] * len(pushed))

    # Sentences.
    def thought(self) -> str:
        """The sentence for the subgoal on top of the stack (call after ``replan``)."""
        if not self.stack:
            raise ThoughtTemplateError("the subgoal stack is empty: the bot thinks the mission is done")
        return self._sentence(len(self.stack) - 1)

    def _sentence(self, index: int) -> str:
        subgoal = self.stack[index]
        note = subgoal.note
        if isinstance(subgoal, CloseSubgoal):
            return f"close {self._fwd_cell('door').color} door"
        if isinstance(subgoal, OpenSubgoal):
            door = self._fwd_cell("door")
            return self._open_sentence(ObjectRef.of(door), door.is_locked, note)
        if isinstance(subgoal, PickupSubgoal):
            return self._pickup_sentence(ObjectRef.of(self._fwd_cell()), note)
        if isinstance(subgoal, DropSubgoal):
            return self._drop_sentence(self._carried(), note)
        if isinstance(subgoal, GoNextToSubgoal):
            return self._go_next_to_sentence(index)
        raise ThoughtTemplateError(f"no template for a {_kind(subgoal)} subgoal on top of the stack")

    def _go_next_to_sentence(self, index: int) -> str:
        subgoal = self.stack[index]
        below = self.stack[index - 1] if index > 0 else None
        note = subgoal.note
        if note is None:
            note = {PickupSubgoal: TO_PICK_IT_UP, OpenSubgoal: TO_OPEN_IT, DropSubgoal: TO_DROP_IT}.get(
                type(below), GOTO_MISSION
            )
        if note == EXPLORE:
            return "explore unseen area"
        if note == GOTO_MISSION:
            return f"go to {self._target(subgoal).words} {GOTO_MISSION}"
        if note == TO_OPEN_IT:
            self._expect_below(below, OpenSubgoal, note)
            target = self._target_thing(subgoal)
            locked = isinstance(target, WorldObj) and target.is_locked
            if getattr(target, "type", None) != "door":
                raise ThoughtTemplateError(f"'{note}' but the target is not a door: {target}")
            return self._open_sentence(ObjectRef.of(target), locked, below.note)
        if note in (TO_DROP_IT, TO_DROP_IT_TEMPORARY):
            if isinstance(below, GoNextToSubgoal) and below.note in (TO_DROP_IT, TO_DROP_IT_TEMPORARY):
                # A step aside for a PutNext target blocked by an open door, pushed on top of the PutNext
                # GoNextTo instead of a Drop. The original implementation still writes the drop sentence
                # with the note of the subgoal below, here that GoNextTo's: "drop red box to drop it".
                return self._drop_sentence(self._carried(), below.note)
            self._expect_below(below, DropSubgoal, note)
            return self._drop_sentence(self._carried(), below.note)
        self._expect_below(below, PickupSubgoal, note)
        if note in (TO_PICK_IT_UP, TO_FIND_A_KEY):
            return self._pickup_sentence(self._target(subgoal), below.note)
        if isinstance(note, WorldObj):  # going back for an object set down earlier
            return self._pickup_sentence(ObjectRef.of(note), below.note)
        raise ThoughtTemplateError(f"no template for GoNextTo with note {note!r}")

    @staticmethod
    def _open_sentence(door: ObjectRef, locked: bool, note) -> str:
        verb = "unlock" if locked else "open"
        return _join(f"{verb} {door.color} door", note)

    @staticmethod
    def _pickup_sentence(obj: ObjectRef, note) -> str:
        if note == REMOVE_BLOCKING_OBJECT:
            return f"remove blocking object {obj.words}"
        return _join(f"pickup {obj.words}", note)

    @staticmethod
    def _drop_sentence(obj: ObjectRef, note) -> str:
        if note == PLACE_BLOCKING_OBJECT:
            return f"remove blocking object {obj.words}"
        if note == AFTER_PICKUP_MISSION:
            return f"pickup {obj.words} {PICKUP_MISSION}"
        return _join(f"drop {obj.words}", note)

    # Lookups in the world.
    def _fwd_cell(self, expected_type: str | None = None) -> WorldObj:
        env = self.mission.unwrapped
        cell = env.grid.get(*(env.agent_pos + env.dir_vec))
        if cell is None or (expected_type and cell.type != expected_type):
            raise ThoughtTemplateError(f"expected a {expected_type or 'object'} in front, found {cell}")
        return cell

    def _carried(self) -> ObjectRef:
        carrying = self.mission.unwrapped.carrying
        if carrying is None:
            raise ThoughtTemplateError("a drop is planned but nothing is carried")
        return ObjectRef.of(carrying)

    def _target_thing(self, subgoal: GoNextToSubgoal):
        if isinstance(subgoal.datum, ObjDesc | WorldObj):
            return subgoal.datum
        return self.mission.unwrapped.grid.get(*subgoal.datum)  # a position: look it up

    def _target(self, subgoal: GoNextToSubgoal) -> ObjectRef:
        ref = ObjectRef.of(self._target_thing(subgoal))
        if ref is None:
            raise ThoughtTemplateError(f"GoNextTo target {tuple(subgoal.datum)} holds no object")
        return ref

    @staticmethod
    def _expect_below(below, kind: type, note) -> None:
        if not isinstance(below, kind):
            raise ThoughtTemplateError(
                f"GoNextTo with note {note!r} expects a {kind.__name__} below it, found "
                f"{type(below).__name__ if below else 'nothing'}"
            )


def _join(sentence: str, note) -> str:
    return f"{sentence} {note}" if isinstance(note, str) and note else sentence
