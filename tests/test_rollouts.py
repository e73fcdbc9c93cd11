"""Batched rollouts: reproducibility per seed, records, steering, BC models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY
from minigrid.utils.baby_ai_bot import DisappearedBoxError

from dataset_builder.episodes import make_env, reset_quietly
from dataset_builder.thoughts import ThoughtBot, ThoughtTemplateError
from hf_thought_cloning import (
    ThoughtCloningConfig,
    ThoughtCloningModel,
    ThoughtCloningProcessor,
    ThoughtCloningTokenizer,
)
from hf_thought_cloning.rollouts import (
    EpisodeRecord,
    OracleThoughts,
    ThoughtInjection,
    mean_length,
    run_episodes,
    success_rate,
)

LEVEL = "BabyAI-GoToLocal-v0"
SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "thought-cloning-minibosslevel-5m-frames"


def tiny(config: ThoughtCloningConfig, seed: int = 0) -> ThoughtCloningModel:
    torch.manual_seed(seed)
    return ThoughtCloningModel(config).eval()


@pytest.fixture(scope="module")
def model() -> ThoughtCloningModel:
    return tiny(ThoughtCloningConfig(**TINY))


@pytest.fixture(scope="module")
def processor() -> ThoughtCloningProcessor:
    return ThoughtCloningProcessor(ThoughtCloningTokenizer())


def trace(record: EpisodeRecord) -> list[tuple]:
    return [(step.thought, step.action) for step in record.steps]


@pytest.mark.parametrize("sample", [True, False])
def test_episode_is_a_function_of_its_seed_whatever_the_batch(model, processor, sample):
    seeds = [3, 1, 4, 1, 5]  # a repeated seed must replay the same episode
    alone = run_episodes(
        model, processor, LEVEL, seeds, num_envs=1, sample=sample, action_seed=7, max_steps=12
    )
    batched = run_episodes(
        model, processor, LEVEL, seeds, num_envs=2, sample=sample, action_seed=7, max_steps=12
    )
    assert [r.seed for r in batched] == seeds  # order of ``seeds``, despite refills
    assert [trace(r) for r in alone] == [trace(r) for r in batched]
    assert trace(batched[1]) == trace(batched[3])
    assert all(r.length == len(r.steps) == 12 and not r.success for r in batched)  # untrained: truncated


class _EncodesMissionsEveryStep:
    """The model as rollouts drove it before they kept each episode's encoded mission."""

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name):
        return getattr(self._model, name)

    def act(self, observations, memory=None, *, mission_features=None, **kwargs):
        assert mission_features is not None  # run_episodes hands them over...
        return self._model.act(observations, memory, **kwargs)  # ...and here act encodes its own


def test_missions_kept_per_episode_change_no_episode():
    # The shipped agent ends episodes at different steps, so rows are refilled with new (often wider or
    # narrower) missions one at a time and leave the batch from the middle once the seeds run out.
    shipped = ThoughtCloningModel.from_pretrained(SHIPPED).eval()
    processor = ThoughtCloningProcessor.from_pretrained(SHIPPED)
    seeds, level = list(range(10_000, 10_012)), "BabyAI-PickupLoc-v0"  # missions of 3 to 9 words
    kept = run_episodes(shipped, processor, level, seeds, num_envs=4, max_steps=40)
    every_step = run_episodes(_EncodesMissionsEveryStep(shipped), processor, level, seeds, num_envs=4, max_steps=40)
    assert len({record.length for record in kept}) > 4 and len({record.mission for record in kept}) > 4
    assert [trace(r) for r in kept] == [trace(r) for r in every_step]


def test_action_seed_changes_sampled_actions_not_argmax(model, processor):
    def actions(sample, action_seed):
        (record,) = run_episodes(
            model, processor, LEVEL, [0], sample=sample, action_seed=action_seed, max_steps=20
        )
        return [step.action for step in record.steps]

    assert actions(True, 0) != actions(True, 1)
    assert actions(False, 0) == actions(False, 1)


def test_records_carry_observations_frames_and_missions(model, processor):
    (record,) = run_episodes(
        model, processor, LEVEL, [2], num_envs=4, max_steps=3, record_observations=True, record_frames=True
    )
    env = make_env(LEVEL)
    observation, _ = reset_quietly(env, 2)
    assert record.mission == observation["mission"] and record.level == LEVEL and record.seed == 2
    first = record.steps[0]
    assert first.image.shape == (7, 7, 3) and first.image.dtype == np.uint8
    assert np.array_equal(first.image, observation["image"])
    assert first.frame.ndim == 3 and first.frame.shape[2] == 3 and first.frame.dtype == np.uint8
    assert first.thought_source == "generated" and isinstance(first.thought, str)
    plain = run_episodes(model, processor, LEVEL, [2], max_steps=3)[0]
    assert plain.steps[0].image is None and plain.steps[0].frame is None
    assert trace(plain) == trace(record)


def test_injection_applies_at_chosen_steps_and_changes_behaviour(model, processor):
    seeds = [0, 1, 2, 3]
    own = run_episodes(model, processor, LEVEL, seeds, max_steps=10)
    injected = run_episodes(
        model,
        processor,
        LEVEL,
        seeds,
        max_steps=10,
        steering=ThoughtInjection("pickup red key to unlock the door"),
    )
    assert all(step.thought_source == "injected" for r in injected for step in r.steps)
    assert all(step.thought == "pickup red key to unlock the door" for r in injected for step in r.steps)
    assert [trace(r) for r in own] != [trace(r) for r in injected]
    partial = run_episodes(
        model, processor, LEVEL, [0], max_steps=10, steering=ThoughtInjection("go to red ball", 2, 5)
    )
    sources = [step.thought_source for step in partial[0].steps]
    assert sources == ["generated"] * 2 + ["injected"] * 3 + ["generated"] * 5
    assert partial[0].steps[:2] == own[0].steps[:2]  # identical until the injection starts


def test_oracle_mode_feeds_the_bots_thought(model, processor):
    (record,) = run_episodes(model, processor, LEVEL, [5], max_steps=6, steering=OracleThoughts())
    env = make_env(LEVEL)
    reset_quietly(env, 5)
    bot = ThoughtBot(env)
    bot.replan()
    assert record.steps[0].thought == bot.thought()
    assert {step.thought_source for step in record.steps} <= {"oracle", "generated"}
    assert record.steps[0].thought_source == "oracle"


def test_bad_steering_is_refused_clearly(model, processor):
    bc = tiny(ThoughtCloningConfig.behavioral_cloning(**TINY))
    with pytest.raises(ValueError, match="behavioural cloning"):
        run_episodes(bc, processor, LEVEL, [0], steering=ThoughtInjection("go to red ball"))
    with pytest.raises(ValueError, match="behavioural cloning"):
        run_episodes(bc, processor, LEVEL, [0], steering=OracleThoughts())
    with pytest.raises(ValueError, match="outside the vocabulary"):
        run_episodes(model, processor, LEVEL, [0], steering=ThoughtInjection("fly to the moon"))
    with pytest.raises(ValueError, match="unknown level"):
        run_episodes(model, processor, "BabyAI-NoSuchLevel-v0", [0])


def test_bc_model_rolls_out_without_thoughts(processor):
    bc = tiny(ThoughtCloningConfig.behavioral_cloning(**TINY))
    records = run_episodes(bc, processor, LEVEL, [0, 1, 2], num_envs=2, max_steps=5)
    assert all(step.thought is None and step.thought_source == "none" for r in records for step in r.steps)
    assert [trace(r) for r in records] == [
        trace(r) for r in run_episodes(bc, processor, LEVEL, [0, 1, 2], max_steps=5)
    ]


def test_success_rate_and_mean_length():
    def record(success: bool, length: int) -> EpisodeRecord:
        return EpisodeRecord(LEVEL, 0, "m", success, length, float(success), False, [], [])

    records = [record(True, 4), record(False, 64), record(True, 10)]
    assert success_rate(records) == pytest.approx(2 / 3)
    assert mean_length(records) == pytest.approx(26.0)
    assert success_rate([]) == 0.0 and mean_length([]) == 0.0


@pytest.mark.parametrize(
    "failure", [AssertionError(), DisappearedBoxError("A box was opened."), ThoughtTemplateError("no template")]
)
def test_oracle_giving_up_is_recorded_and_the_agent_goes_on(model, processor, monkeypatch, failure):
    """The bot's known ways of giving up end the oracle's advice, not the episode."""

    def give_up(self, action_taken=None):
        raise failure

    monkeypatch.setattr(ThoughtBot, "replan", give_up)
    (record,) = run_episodes(model, processor, LEVEL, [5], max_steps=4, steering=OracleThoughts())
    assert record.length == 4 and [step.thought_source for step in record.steps] == ["generated"] * 4
    assert [event["detector"] for event in record.events] == ["oracle"]
    assert record.events[0]["detail"].startswith(type(failure).__name__)


def test_an_unrelated_error_in_oracle_mode_propagates(model, processor, monkeypatch):
    def broken(self, action_taken=None):
        raise KeyError("a bug, not the bot giving up")

    monkeypatch.setattr(ThoughtBot, "replan", broken)
    with pytest.raises(KeyError, match="a bug"):
        run_episodes(model, processor, LEVEL, [5], max_steps=4, steering=OracleThoughts())


@pytest.mark.parametrize("thought", ["", "   ", None])
def test_an_empty_injected_thought_is_refused(thought):
    with pytest.raises(ValueError, match="at least one word"):
        ThoughtInjection(thought)


# ------------------------------------------------------------------------------------ EpisodeSession
def play(session) -> EpisodeRecord:
    while not session.done:
        session.step()
    return session.record


@pytest.mark.parametrize("case", ["own", "oracle", "injected", "monitor"])
def test_a_session_plays_the_episode_run_episodes_plays(model, processor, case):
    """Step by step, with the same steering and monitor, the very episode of the batched rollouts."""
    from hf_thought_cloning.rollouts import EpisodeSession
    from hf_thought_cloning.safety import PrecrimeMonitor

    thought = "pickup red key to unlock the door"
    steering = {"oracle": OracleThoughts(), "injected": ThoughtInjection(thought, 0, 3)}.get(case)
    monitor = (
        PrecrimeMonitor([r"\b(?:go|pickup|open|explore|drop|remove|unlock)\b"]) if case == "monitor" else None
    )
    options = {"action_seed": 3, "max_steps": 12, "monitor": monitor}
    (expected,) = run_episodes(model, processor, LEVEL, [4], steering=steering, **options)
    session = EpisodeSession(model, processor, LEVEL, 4, **options)
    if case == "injected":
        session.inject(thought, 3)
    elif steering is not None:
        session.steer(steering)
    record = play(session)
    assert [(s.thought, s.thought_source, s.action, s.halted) for s in record.steps] == [
        (s.thought, s.thought_source, s.action, s.halted) for s in expected.steps
    ]
    assert (record.length, record.halted, record.events) == (
        expected.length,
        expected.halted,
        expected.events,
    )
    assert all(step.frame is not None for step in record.steps) and len(session.demonstrator_thoughts) == len(
        record.steps
    )
    with pytest.raises(RuntimeError, match="the episode is over"):
        session.step()


def test_a_session_knows_the_demonstrators_thought_and_changes_steering_between_steps(model, processor):
    from hf_thought_cloning.rollouts import EpisodeSession

    session = EpisodeSession(model, processor, LEVEL, 5, max_steps=8)
    env = make_env(LEVEL)
    reset_quietly(env, 5)
    bot = ThoughtBot(env)
    bot.replan()
    assert session.step().thought_source == "generated" and session.demonstrator_thoughts == [bot.thought()]
    session.steer(OracleThoughts())
    oracle = session.step()
    assert oracle.thought_source == "oracle" and oracle.thought == session.demonstrator_thoughts[1]
    injection = session.inject("go to red ball", 2)
    assert (injection.start, injection.stop) == (2, 4)
    assert [session.step().thought for _ in range(3)][:2] == ["go to red ball"] * 2
    assert session.record.steps[4].thought_source == "generated"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        session.inject("fly to the moon", 2)
    with pytest.raises(ValueError, match="at least 1 step"):
        session.inject("go to red ball", 0)
    data = session.to_json()
    assert data["format"] == "hf-thought-cloning/episode-trace" and data["seed"] == 5 and data["length"] == 5
    assert [s["demonstrator_thought"] for s in data["steps"]] == session.demonstrator_thoughts
    assert [s["thought_source"] for s in data["steps"]] == [
        "generated",
        "oracle",
        "injected",
        "injected",
        "generated",
    ]
    bc = tiny(ThoughtCloningConfig.behavioral_cloning(**TINY))
    with pytest.raises(ValueError, match="behavioural cloning"):
        EpisodeSession(bc, processor, LEVEL, 0, steering=OracleThoughts())
    with pytest.raises(ValueError, match="unknown level"):
        EpisodeSession(model, processor, "BabyAI-NoSuchLevel-v0", 0)


def test_the_readable_trace_of_a_halted_episode_ends_with_the_halted_step(model, processor):
    from hf_thought_cloning.safety import PrecrimeMonitor

    (record,) = run_episodes(model, processor, LEVEL, [1], max_steps=6, steering=ThoughtInjection("go to red ball", 2),
                             monitor=PrecrimeMonitor([r"go to red ball"]))  # fmt: skip
    assert record.halted and record.length == 2
    lines = record.readable_trace().splitlines()
    assert lines[0] == f"mission: {record.mission}"
    assert lines[-2] == "  steps       2  go to red ball [halted]" and "not executed)" in lines[-1]
    assert record.to_json()["steps"][-1]["halted"] is True
