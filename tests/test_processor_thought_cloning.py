"""The processor on real gymnasium observations and real bot episodes."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest
import torch
from transformers import AutoProcessor

from dataset_builder.episodes import make_env, reset_quietly, run_episode
from hf_thought_cloning import ThoughtCloningProcessor, ThoughtCloningTokenizer

LEVEL = "BabyAI-GoToLocal-v0"


@functools.cache
def episodes(level: str = LEVEL, seeds: tuple[int, ...] = (0, 1, 2, 3)) -> list:
    env = make_env(level)
    return [run_episode(env, level, seed) for seed in seeds]


@pytest.fixture(scope="module")
def processor() -> ThoughtCloningProcessor:
    return ThoughtCloningProcessor(ThoughtCloningTokenizer())


def test_single_observation(processor):
    env = make_env(LEVEL)
    observation, _ = reset_quietly(env, 0)
    inputs = processor(observation)
    assert inputs["images"].shape == (1, 7, 7, 3) and inputs["images"].dtype == torch.long
    assert torch.equal(inputs["images"][0], torch.as_tensor(observation["image"]).long())
    words = processor.tokenizer.convert_ids_to_tokens(inputs["mission_input_ids"][0])
    assert " ".join(words) == observation["mission"]


def test_list_and_vector_env_observations_agree(processor):
    env = make_env(LEVEL)
    observations = [reset_quietly(env, seed)[0] for seed in range(3)]
    from_list = processor(observations)
    vector_env = gym.vector.SyncVectorEnv([lambda: make_env(LEVEL) for _ in range(3)])
    batched, _ = vector_env.reset(seed=[0, 1, 2])
    from_vector = processor(batched)
    assert from_list["images"].shape == (3, 7, 7, 3)
    assert torch.equal(from_list["images"], from_vector["images"])
    assert torch.equal(from_list["mission_input_ids"], from_vector["mission_input_ids"])


def test_injected_thoughts_are_tokenized(processor):
    env = make_env(LEVEL)
    observation, _ = reset_quietly(env, 0)
    inputs = processor([observation, observation], thoughts=["go to red ball", "explore unseen area"])
    assert inputs["thought_input_ids"].shape == (2, 4)
    assert processor.decode_thoughts(inputs["thought_input_ids"]) == ["go to red ball", "explore unseen area"]


def test_collate_real_episodes_and_dataset_rows(processor):
    eps = episodes()
    batch = processor.collate_episodes(eps)
    steps = max(e.num_steps for e in eps)
    assert batch["images"].shape == (4, steps, 7, 7, 3)
    assert batch["thought_input_ids"].shape[:2] == (4, steps)
    for row, episode in enumerate(eps):
        n = episode.num_steps
        assert batch["actions"][row, :n].tolist() == episode.actions
        assert bool((batch["actions"][row, n:] == -100).all()) and int(batch["step_mask"][row].sum()) == n
        assert processor.decode_thoughts(batch["thought_input_ids"][row, :n]) == episode.thoughts
    assert batch["episode_starts"][:, 0].all() and not batch["episode_starts"][:, 1:].any()
    rows = [
        {"mission": e.mission, "images": e.images, "actions": e.actions, "thoughts": e.thoughts} for e in eps
    ]
    from_rows = processor.collate_episodes(rows)
    assert all(torch.equal(batch[key], from_rows[key]) for key in batch)


def test_windows_cut_time_only(processor):
    batch = processor.collate_episodes(episodes())
    windows = list(processor.windows(batch, 4))
    assert sum(w["images"].shape[1] for w in windows) == batch["images"].shape[1]
    assert windows[0]["episode_starts"][:, 0].all()
    assert all(not w["episode_starts"].any() for w in windows[1:])
    assert all(torch.equal(w["mission_input_ids"], batch["mission_input_ids"]) for w in windows)


def test_unknown_words_raise_by_default_or_become_unk(processor):
    observation = {"image": np.zeros((7, 7, 3), dtype=np.uint8), "mission": "go to the red dragon"}
    with pytest.raises(ValueError, match="dragon"):
        processor(observation)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        processor({**observation, "mission": "go to the red ball"}, thoughts="fly away")
    lenient = ThoughtCloningProcessor(processor.tokenizer, unknown_words="unk")
    assert lenient(observation)["mission_input_ids"][0, -1].item() == processor.tokenizer.unk_token_id
    with pytest.raises(ValueError, match="unknown_words"):
        ThoughtCloningProcessor(processor.tokenizer, unknown_words="ignore")


def test_bad_shapes_and_counts(processor):
    with pytest.raises(ValueError, match="7, 7, 3"):
        processor({"image": np.zeros((5, 5, 3), dtype=np.uint8), "mission": "open the door"})
    with pytest.raises(ValueError, match="one mission"):
        processor({"image": np.zeros((2, 7, 7, 3), dtype=np.uint8), "mission": ["open the door"]})
    with pytest.raises(ValueError, match="thoughts for"):
        processor(
            {"image": np.zeros((2, 7, 7, 3)), "mission": ["open the door"] * 2}, thoughts=["open the door"]
        )


def test_auto_processor_round_trip(processor, tmp_path):
    lenient = ThoughtCloningProcessor(processor.tokenizer, unknown_words="unk")
    lenient.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path, trust_remote_code=False)
    assert type(loaded) is ThoughtCloningProcessor and loaded.unknown_words == "unk"
    assert type(loaded.tokenizer) is ThoughtCloningTokenizer
