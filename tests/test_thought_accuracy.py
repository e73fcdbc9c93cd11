"""hf_thought_cloning.evaluation.thought_accuracy: scores against answers known without it, and its CLI.

Every expected number here is computed from the dataset's own columns (read straight from its Parquet shards)
or from rollouts (``model.act``, a code path apart from the ``forward`` pass the module scores), never from the
module's helpers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from conftest import TINY, TINY_LEVEL, run_cli, save_tiny
from tiny_vlms import save_tiny_vlm

from hf_thought_cloning import (
    ThoughtCloningConfig,
    ThoughtCloningModel,
    ThoughtCloningProcessor,
    ThoughtCloningTokenizer,
)
from hf_thought_cloning.evaluation.thought_accuracy import thought_accuracy

MODULE = "hf_thought_cloning.evaluation.thought_accuracy"
KEYS = {
    "episodes", "steps", "thought_tokens", "thought_token_accuracy", "whole_thought_accuracy", "changed_steps",
    "whole_thought_accuracy_changed", "copy_previous_accuracy", "teacher_forcing",
}  # fmt: skip
EOS = "<eos>"


# ------------------------------------------------------------------------------------------- helpers
def split_rows(folder: Path, split: str) -> list[dict]:
    """The split's episodes, read straight from the folder's Parquet shards."""
    shards = sorted((folder / "data" / TINY_LEVEL).glob(f"{split}-*.parquet"))
    assert shards, f"no {split} shards in {folder}"
    return [row for shard in shards for row in pq.read_table(shard).to_pylist()]


def words(thought: str) -> list[str]:
    """A thought's target tokens in our vocabulary: its words (commas apart), then eos."""
    return [*thought.replace(",", " , ").split(), EOS]


def all_steps(episodes: list[dict]) -> list[tuple[str, str]]:
    """(previous thought, thought) of every step in (episode, step) order; "" before an episode's first."""
    return [(thoughts[t - 1] if t else "", thoughts[t]) for e in episodes for thoughts in [e["thoughts"]]
            for t in range(len(thoughts))]  # fmt: skip


def expected_counts(episodes: list[dict]) -> dict:
    steps = all_steps(episodes)
    changed = sum(t == 0 or thoughts[t] != thoughts[t - 1] for e in episodes for thoughts in [e["thoughts"]]
                  for t in range(len(thoughts)))  # fmt: skip
    return {"episodes": len(episodes), "steps": sum(len(e["actions"]) for e in episodes),
            "thought_tokens": sum(len(words(thought)) for _, thought in steps), "changed_steps": changed,
            "copy_previous_accuracy": sum(previous == thought for previous, thought in steps) / len(steps)}  # fmt: skip


def constant_decoder(model: ThoughtCloningModel, token: str) -> ThoughtCloningModel:
    """The decoder's word logits no longer depend on anything: it predicts ``token`` at every position."""
    layer = model.thought_generator.word_logits
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.fill_(-10.0)
        layer.bias[model.config.vocabulary.index(token)] = 10.0
    return model


def tiny_model(seed: int = 0, **config) -> ThoughtCloningModel:
    torch.manual_seed(seed)
    return ThoughtCloningModel(ThoughtCloningConfig(**TINY, **config)).eval()


@pytest.fixture(scope="module")
def processor() -> ThoughtCloningProcessor:
    return ThoughtCloningProcessor(ThoughtCloningTokenizer())


@pytest.fixture(scope="module")
def train_rows(generated_folder) -> list[dict]:
    rows = split_rows(generated_folder, "train")
    assert len(rows) >= 4 and len({len(row["actions"]) for row in rows}) > 1  # batches of unequal episodes
    return rows


# ------------------------------------------------------------------------------------ the command line
@pytest.fixture(scope="module")
def to_folder(tmp_path_factory) -> Path:
    """A saved tiny model whose decoder always predicts "to"."""
    folder = save_tiny(tmp_path_factory.mktemp("constant") / "model")
    model = ThoughtCloningModel.from_pretrained(folder)
    constant_decoder(model, "to").save_pretrained(folder)
    return folder


@pytest.mark.parametrize("teacher_forcing", [True, False], ids=["teacher-forced", "own-thoughts"])
def test_cli_scores_a_split_end_to_end(generated_folder, to_folder, tmp_path, teacher_forcing):
    output = tmp_path / "scores" / "accuracy.json"
    done = run_cli(MODULE, "--model", str(to_folder), "--dataset", str(generated_folder), "--split", "validation",
                   "--batch-episodes", "2", "--output", str(output),
                   *(() if teacher_forcing else ("--no-teacher-forcing",)))  # fmt: skip
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert json.loads(output.read_text()) == printed
    assert not [path.name for path in output.parent.iterdir() if path != output]  # no temporary left behind
    assert KEYS | {"model", "dataset", "config", "split"} == set(printed)
    assert printed["teacher_forcing"] is teacher_forcing
    assert (printed["config"], printed["split"]) == (TINY_LEVEL, "validation")
    rows = split_rows(generated_folder, "validation")
    expected = expected_counts(rows)
    assert {key: printed[key] for key in expected} == pytest.approx(expected)
    # A decoder that always says "to": right exactly where the demonstrator's token is "to", in both modes
    # (it never writes eos, so its own thought is "to to ..." at every position); no thought is wholly "to".
    targets = [token for _, thought in all_steps(rows) for token in words(thought)]
    assert printed["thought_token_accuracy"] == pytest.approx(targets.count("to") / len(targets))
    assert 0 < printed["thought_token_accuracy"] < 1
    assert printed["whole_thought_accuracy"] == printed["whole_thought_accuracy_changed"] == 0


def test_cli_refuses_what_it_cannot_score(generated_folder, tmp_path):
    bc = save_tiny(tmp_path / "bc", ThoughtCloningConfig.behavioral_cloning(**TINY))
    done = run_cli(MODULE, "--model", str(bc), "--dataset", str(generated_folder), "--output",
                   str(tmp_path / "out.json"), check=False)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "no Thought Generator" in done.stderr and "upper_level='none'" in done.stderr
    assert done.stdout == "" and not (tmp_path / "out.json").exists()

    tc = save_tiny(tmp_path / "tc")
    done = run_cli(
        MODULE, "--model", str(tc), "--dataset", str(generated_folder), "--split", "nope", check=False
    )
    assert done.returncode == 2, done.stderr
    assert "error: " in done.stderr and "'nope'" in done.stderr and "validation" in done.stderr
    done = run_cli(MODULE, "--model", str(tc), "--dataset", str(tmp_path / "missing"), check=False)
    assert done.returncode == 2 and "error: " in done.stderr, done.stderr


# ------------------------------------------------------------------------- scores with a known answer
@pytest.mark.parametrize("teacher_forcing", [True, False], ids=["teacher-forced", "own-thoughts"])
def test_constant_decoders_score_what_the_dataset_says(processor, train_rows, teacher_forcing):
    steps = [thought for _, thought in all_steps(train_rows)]
    targets = [token for thought in steps for token in words(thought)]
    for token in ("go", "to", "red"):
        scores = thought_accuracy(constant_decoder(tiny_model(), token), processor, train_rows,
                                  teacher_forcing=teacher_forcing, batch_episodes=3)  # fmt: skip
        assert scores["thought_token_accuracy"] == pytest.approx(targets.count(token) / len(targets)), token
        assert scores["whole_thought_accuracy"] == 0
    # Always eos. Teacher forced, each target's eos is right (one per step). Reading its own words, the thought
    # it writes is empty: what its decoder predicts after that eos is not part of it, so only an empty target
    # thought scores (positions past the decoder's eos are wrong, even where it would go on to predict eos).
    scores = thought_accuracy(constant_decoder(tiny_model(), EOS), processor, train_rows,
                              teacher_forcing=teacher_forcing, batch_episodes=3)  # fmt: skip
    empty = sum(words(thought) == [EOS] for thought in steps)
    right = len(steps) if teacher_forcing else empty
    assert scores["thought_token_accuracy"] == pytest.approx(right / len(targets))
    assert scores["whole_thought_accuracy"] == pytest.approx(empty / len(steps))
    assert {key: scores[key] for key in expected_counts(train_rows)} == pytest.approx(
        expected_counts(train_rows)
    )


def oracle(model: ThoughtCloningModel, copy_previous: bool):
    """A forward hook that makes ``thought_logits`` say, at every step, the demonstrator's thought (or the
    previous step's, nothing before an episode's first), then eos, then the padding id."""
    config = model.config

    def hook(module, args, kwargs, output):
        ids = kwargs["thought_input_ids"]
        batch, steps, width = ids.shape
        logits = torch.zeros(batch, steps, width + 2, config.vocab_size)
        for b in range(batch):
            for t in range(steps):
                said = ids[b, t - 1] if copy_previous and t > 0 else ids[b, t]
                said = (
                    [] if copy_previous and t == 0 else [i for i in said.tolist() if i != config.pad_token_id]
                )
                for position, token in enumerate([*said, config.eos_token_id]):
                    logits[b, t, position, token] = 1.0
                logits[b, t, len(said) + 1 :, config.pad_token_id] = 1.0
        output.thought_logits = logits
        return output

    return model.register_forward_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("teacher_forcing", [True, False], ids=["teacher-forced", "own-thoughts"])
def test_oracles_score_what_the_dataset_says(processor, train_rows, teacher_forcing):
    """Thoughts known to be right (or to be the previous step's) score as the dataset's columns say: the steps,
    their targets and their changes line up across episodes of unequal lengths and batches."""
    model = tiny_model()
    with_hook = oracle(model, copy_previous=False)
    scores = thought_accuracy(model, processor, train_rows, teacher_forcing=teacher_forcing, batch_episodes=3)
    with_hook.remove()
    assert scores["thought_token_accuracy"] == scores["whole_thought_accuracy"] == 1.0
    assert scores["whole_thought_accuracy_changed"] == 1.0

    with_hook = oracle(model, copy_previous=True)
    scores = thought_accuracy(model, processor, train_rows, teacher_forcing=teacher_forcing, batch_episodes=3)
    with_hook.remove()
    steps = all_steps(train_rows)
    right = sum(
        p == q for previous, thought in steps for p, q in zip(words(previous), words(thought), strict=False)
    )
    assert scores["thought_token_accuracy"] == pytest.approx(right / sum(len(words(t)) for _, t in steps))
    assert scores["whole_thought_accuracy"] == pytest.approx(scores["copy_previous_accuracy"])
    assert scores["whole_thought_accuracy"] == pytest.approx(
        expected_counts(train_rows)["copy_previous_accuracy"]
    )
    assert 0 < scores["whole_thought_accuracy"] < 1 and scores["whole_thought_accuracy_changed"] == 0


# ------------------------------------------------------------------------------- against rollouts
@pytest.fixture(scope="module")
def trained(processor, train_rows) -> ThoughtCloningModel:
    """A tiny model trained a little on the split it is scored on: thoughts partly right."""
    model = tiny_model().train()
    batch = processor.collate_episodes(train_rows)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(25):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval().double()  # double: no near-tie argmax differs between two ways of computing it


def rollout_thoughts(model, processor, episode: dict, teacher_forced: bool) -> list[list[int]]:
    """The thought ``model.act`` writes at each step (word ids, eos dropped), reading its own previous thoughts,
    or (``teacher_forced``) the demonstrator's previous thoughts, injected."""
    sequence = processor.collate_episodes([episode])
    memory, written = None, []
    for t in range(len(episode["actions"])):
        step = {"images": sequence["images"][:, t], "mission_input_ids": sequence["mission_input_ids"]}
        acted = model.act(step, memory, sample=False)
        ids = acted.thought_ids[0].tolist()
        while ids and ids[-1] == model.config.pad_token_id:
            ids.pop()
        written.append(ids)
        memory = model.act(step, memory, thought=[episode["thoughts"][t]], sample=False).memory if teacher_forced else acted.memory  # fmt: skip
    return written


def test_scores_match_rollouts(processor, train_rows, trained):
    vocabulary, eos = list(trained.config.vocabulary), trained.config.eos_token_id
    targets = [[vocabulary.index(w) for w in words(thought)[:-1]] + [eos]
               for e in train_rows for thought in e["thoughts"]]  # fmt: skip
    own = [
        ids + [eos]
        for e in train_rows
        for ids in rollout_thoughts(trained, processor, e, teacher_forced=False)
    ]
    scores = thought_accuracy(trained, processor, train_rows, teacher_forcing=False, batch_episodes=4)
    # Reading its own thoughts: the thought it writes, its eos included, against the demonstrator's.
    right = sum(
        p == q
        for written, target in zip(own, targets, strict=True)
        for p, q in zip(written, target, strict=False)
    )
    assert scores["thought_token_accuracy"] == pytest.approx(right / sum(map(len, targets)))
    whole = [written == target for written, target in zip(own, targets, strict=True)]
    assert scores["whole_thought_accuracy"] == pytest.approx(sum(whole) / len(whole))
    assert 0 < scores["thought_token_accuracy"] < 1
    # Teacher forced: a thought is wholly right exactly when greedy decoding after the demonstrator's previous
    # thought writes it; each token is right up to the first the greedy thought gets wrong, which is wrong.
    forced = [
        ids + [eos]
        for e in train_rows
        for ids in rollout_thoughts(trained, processor, e, teacher_forced=True)
    ]
    scores = thought_accuracy(trained, processor, train_rows, teacher_forcing=True, batch_episodes=4)
    whole = [written == target for written, target in zip(forced, targets, strict=True)]
    assert scores["whole_thought_accuracy"] == pytest.approx(sum(whole) / len(whole))
    prefix = [
        next((i for i, (p, q) in enumerate(zip(w, t, strict=False)) if p != q), len(t))
        for w, t in zip(forced, targets, strict=True)
    ]
    tokens, wrong_steps = sum(map(len, targets)), sum(not w for w in whole)
    assert sum(prefix) <= scores["thought_token_accuracy"] * tokens <= tokens - wrong_steps
    assert 0 < scores["thought_token_accuracy"] < 1


# ------------------------------------------------------------------------------------- other levels
def test_a_vlm_upper_level_is_scored_teacher_forced_in_its_own_tokens(processor, generated_folder, tmp_path):
    rows = split_rows(generated_folder, "validation")
    torch.manual_seed(0)
    model = ThoughtCloningModel.from_vlm(str(save_tiny_vlm(tmp_path / "llava", "llava")), **TINY).eval()
    with pytest.raises(ValueError, match="teacher forcing only"):
        thought_accuracy(model, processor, rows, teacher_forcing=False)
    # An LM head that always says "go", in the VLM tokenizer's tokens (the target thought, then its eos).
    tokenizer = model.vlm_prompter.tokenizer
    go = tokenizer.convert_tokens_to_ids("go")
    head = torch.nn.Linear(model.vlm.lm_head.in_features, model.vlm.lm_head.out_features)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-10.0)
        head.bias[go] = 10.0
    model.vlm.lm_head = head
    scores = thought_accuracy(model, processor, rows, batch_episodes=2)
    targets = [token for _, thought in all_steps(rows)
               for token in tokenizer(thought, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]]  # fmt: skip
    assert scores["thought_tokens"] == len(targets)
    assert (
        scores["thought_token_accuracy"] == pytest.approx(targets.count(go) / len(targets)) and go in targets
    )
    assert scores["whole_thought_accuracy"] == 0
    assert {key: scores[key] for key in expected_counts(rows) if key != "thought_tokens"} == pytest.approx(
        {key: value for key, value in expected_counts(rows).items() if key != "thought_tokens"}
    )


def test_soft_words_are_scored_on_their_own_thoughts_only(processor, train_rows):
    model = constant_decoder(tiny_model(thought_channel="soft_words"), "to")
    with pytest.raises(ValueError, match="without teacher forcing"):
        thought_accuracy(model, processor, train_rows)
    scores = thought_accuracy(model, processor, train_rows, teacher_forcing=False)
    targets = [token for _, thought in all_steps(train_rows) for token in words(thought)]
    assert scores["thought_token_accuracy"] == pytest.approx(targets.count("to") / len(targets))
