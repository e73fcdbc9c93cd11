"""The closed word lists of BabyAI missions and Thought Cloning thoughts.

Both grammars are finite and known in advance (minigrid's instruction surface forms and the
thought templates of ``dataset_builder.thoughts``), so the word lists are fixed and ordered by
hand, never built in order of appearance. The model's tokenizer vocabulary (special tokens, then
these words) is ``hf_thought_cloning.vocabulary.full_vocabulary()``.
"""

from __future__ import annotations

from collections.abc import Iterable

COLORS: tuple[str, ...] = ("red", "green", "blue", "purple", "yellow", "grey")
OBJECT_TYPES: tuple[str, ...] = ("door", "key", "ball", "box")

# Words of minigrid's instruction surface forms (GoTo, Pickup, Open, PutNext, Before/After/And,
# object descriptions with locations), colours and types excluded. "," is its own token.
MISSION_WORDS: tuple[str, ...] = (
    "go",
    "to",
    "pick",
    "up",
    "open",
    "put",
    "next",
    "the",
    "a",
    "object",
    "in",
    "front",
    "of",
    "you",
    "behind",
    "on",
    "your",
    "left",
    "right",
    "and",
    "then",
    "after",
    ",",
)

# Words of the thought templates (bot thoughts and noise thoughts), colours and types excluded.
THOUGHT_WORDS: tuple[str, ...] = (
    "explore",
    "unseen",
    "area",
    "open",
    "unlock",
    "close",
    "pickup",
    "drop",
    "remove",
    "blocking",
    "object",
    "go",
    "to",
    "complete",
    "mission",
    "GoTo",
    "PutNext",
    "pickup",
    "the",
    "door",
    "a",
    "find",
    "key",
    "it",
    "up",
    "pick",
    "unlock",
    "after",
    "temporary",
    "place",
    "previous",
    "carrying",
    "resume",
)


def unique_words(words: Iterable[str]) -> tuple[str, ...]:
    """``words`` without repeats, in order of first appearance."""
    return tuple(dict.fromkeys(words))


def thought_vocabulary() -> tuple[str, ...]:
    """Every word a thought may contain."""
    return unique_words((*THOUGHT_WORDS, *COLORS, *OBJECT_TYPES))


def mission_vocabulary() -> tuple[str, ...]:
    """Every word a BabyAI mission may contain."""
    return unique_words((*MISSION_WORDS, *COLORS, *OBJECT_TYPES))


def split_words(text: str) -> list[str]:
    """Split a mission or thought into vocabulary words ("," becomes a word of its own)."""
    return text.replace(",", " , ").split()
