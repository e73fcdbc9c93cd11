"""The model's word vocabulary: the special tokens (ids 0-3), then ``dataset_builder``'s mission and
thought words, in a fixed order (the tokenizer's ids).

``save_pretrained`` copies this file beside the configuration and tokenizer for the ``trust_remote_code``
route, where neither package may be installed. There the saved ``config.json`` and ``tokenizer.json``
carry the vocabulary, so the word lists are only needed for the default of a new config or tokenizer.
The import sits in a ``try`` block because transformers' ``check_imports`` skips imports inside one.
"""

from __future__ import annotations

PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)

try:
    from dataset_builder.vocabulary import mission_vocabulary, thought_vocabulary, unique_words
except ImportError:  # remote-code route without the packages: only saved vocabularies are available
    mission_vocabulary = thought_vocabulary = unique_words = None


def full_vocabulary() -> tuple[str, ...]:
    """Special tokens, then mission words, then thought-only words: the tokenizer's id order."""
    if unique_words is None:
        raise ImportError(
            "the default Thought Cloning vocabulary needs the dataset_builder package "
            "(pip install hf-thought-cloning); a saved model folder carries its own vocabulary in config.json "
            "and tokenizer.json, so load one with from_pretrained instead of building a default"
        )
    return unique_words((*SPECIAL_TOKENS, *mission_vocabulary(), *thought_vocabulary()))
