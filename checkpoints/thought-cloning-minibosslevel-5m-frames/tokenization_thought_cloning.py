"""Word-level tokenizer over the fixed BabyAI mission and thought vocabulary.

One token per word; "," is a word of its own. Case is kept ("GoTo", "PutNext" are thought words).
Unknown words become `<unk>` (id 3): [`ThoughtCloningProcessor`] refuses them by default.
"""

from __future__ import annotations

from typing import Any

from tokenizers import Tokenizer, decoders, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from .vocabulary import BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, UNK_TOKEN, full_vocabulary

__all__ = ["ThoughtCloningTokenizer"]


class ThoughtCloningTokenizer(PreTrainedTokenizerFast):
    """`PreTrainedTokenizerFast` over a fixed word vocabulary (WordLevel model, whitespace + "," split).

    Args:
        vocab (`dict[str, int]`, *optional*): word -> id; defaults to ``vocabulary.full_vocabulary()`` in order.
    """

    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab: dict[str, int] | None = None, **kwargs: Any):
        if vocab is None:
            vocab = {word: index for index, word in enumerate(full_vocabulary())}
        self._vocab = dict(vocab)
        backend = Tokenizer(WordLevel(vocab=self._vocab, unk_token=UNK_TOKEN))
        # "," is isolated as its own word; every other split is on whitespace.
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(",", behavior="isolated")]
        )
        backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)
        self._tokenizer = backend
        for name, token in (("pad_token", PAD_TOKEN), ("bos_token", BOS_TOKEN), ("eos_token", EOS_TOKEN),
                            ("unk_token", UNK_TOKEN)):
            kwargs.setdefault(name, token)
        kwargs.pop("tokenizer_object", None)
        kwargs.pop("tokenizer_file", None)
        super().__init__(**kwargs)

    def get_vocab(self) -> dict[str, int]:
        return dict(self._vocab)

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` that the vocabulary lacks (they would become `<unk>`)."""
        words = self._tokenizer.pre_tokenizer.pre_tokenize_str(text)
        return [word for word, _ in words if word not in self._vocab]
