"""The closed word vocabulary of BabyAI missions and Thought Cloning thoughts.

Both grammars are finite and known in advance (minigrid's instruction surface forms and the
thought templates of ``dataset_builder.thoughts``), so the vocabulary is fixed and ordered by
hand, never built in order of appearance. Ids 0-3 are the special tokens.
"""

from __future__ import annotations

PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)

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


def _unique(words) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for word in words:
        seen.setdefault(word, None)
    return tuple(seen)


def thought_vocabulary() -> tuple[str, ...]:
    """Every word a thought may contain."""
    return _unique((*THOUGHT_WORDS, *COLORS, *OBJECT_TYPES))


def mission_vocabulary() -> tuple[str, ...]:
    """Every word a BabyAI mission may contain."""
    return _unique((*MISSION_WORDS, *COLORS, *OBJECT_TYPES))


def full_vocabulary() -> tuple[str, ...]:
    """Special tokens, then mission words, then thought-only words: the tokenizer's id order."""
    return _unique((*SPECIAL_TOKENS, *mission_vocabulary(), *thought_vocabulary()))


def split_words(text: str) -> list[str]:
    """Split a mission or thought into vocabulary words ("," becomes a word of its own)."""
    return text.replace(",", " , ").split()
