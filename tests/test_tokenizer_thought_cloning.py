"""The word-level tokenizer: fixed vocabulary order, "," as a word, unknown words, both Auto routes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from transformers import AutoTokenizer

from dataset_builder.vocabulary import split_words
from hf_thought_cloning import ThoughtCloningTokenizer
from hf_thought_cloning.vocabulary import full_vocabulary


@pytest.fixture(scope="module")
def tokenizer() -> ThoughtCloningTokenizer:
    return ThoughtCloningTokenizer()


def test_vocabulary_is_the_fixed_one_in_order(tokenizer):
    vocab = tokenizer.get_vocab()
    assert [word for word, _ in sorted(vocab.items(), key=lambda item: item[1])] == list(full_vocabulary())
    assert (
        tokenizer.pad_token_id,
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.unk_token_id,
    ) == (0, 1, 2, 3)
    assert len(tokenizer) == len(full_vocabulary())


def test_words_match_split_words_and_comma_is_a_word(tokenizer):
    mission = "go to the red ball, then pick up a box on your left"
    ids = tokenizer(mission, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == split_words(mission)
    assert "," in tokenizer.convert_ids_to_tokens(ids)


def test_case_is_kept_and_unknown_words_become_unk(tokenizer):
    ids = tokenizer("go to red ball to complete GoTo mission zebra", add_special_tokens=False)["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert "GoTo" in tokens and tokens[-1] == "<unk>"
    assert tokenizer.unknown_words("go to the zebra, quickly") == ["zebra", "quickly"]


def test_batch_padding_uses_pad_id(tokenizer):
    batch = tokenizer(["open the door", "go to the red ball"], padding=True, add_special_tokens=False)
    assert batch["input_ids"][0][-2:] == [0, 0] and batch["attention_mask"][0][-2:] == [0, 0]


def test_registered_auto_tokenizer_round_trip(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, trust_remote_code=False)
    assert type(loaded) is ThoughtCloningTokenizer
    text = "pickup red key to complete PutNext mission, then drop it"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]


def test_remote_code_tokenizer_loads_without_the_package(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "tokenization_thought_cloning.py").exists() and (tmp_path / "vocabulary.py").exists()
    script = (
        "import sys; sys.modules['hf_thought_cloning'] = None\n"
        "from transformers import AutoTokenizer\n"
        f"t = AutoTokenizer.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)\n"
        "assert 'hf_thought_cloning' not in type(t).__module__, type(t).__module__\n"
        "print(t('go to the red ball, then open a door', add_special_tokens=False)['input_ids'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    expected = tokenizer("go to the red ball, then open a door", add_special_tokens=False)["input_ids"]
    assert result.stdout.strip().splitlines()[-1] == str(expected)
