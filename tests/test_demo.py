"""The demo as a person uses it: the Gradio app served on 127.0.0.1 with the shipped agent, driven through
gradio_client; what each call shows (the thought, the demonstrator's thought, the halt reason, the messages)
is checked against the project's own rollouts, thought bot and monitor."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from gradio_client import Client
from PIL import Image

from dataset_builder.episodes import make_env, reset_quietly
from dataset_builder.thoughts import ThoughtBot
from demo.app import DEFAULT_LEVEL, cached_model, default_model
from hf_thought_cloning.rollouts import OracleThoughts, run_episodes

SEED = 0


@pytest.fixture
def client(demo_url) -> Client:
    """A fresh visitor (its own session) per test."""
    return Client(demo_url, verbose=False)


def new_episode(client: Client, seed: str = str(SEED), level: str = DEFAULT_LEVEL, *, model: str | None = None,
                oracle: bool = False, behaviours: tuple[str, ...] = (), pattern: str = "") -> dict:  # fmt: skip
    return shown(client.predict(model or default_model(), level, seed, oracle, list(behaviours), pattern,
                                api_name="/new_episode"))  # fmt: skip


def step(client: Client) -> dict:
    return shown(client.predict(api_name="/step"))


def shown(values: tuple) -> dict:
    """What the page shows after a call that updates the episode view."""
    names = ("frame", "thought", "demonstrator", "trace", "episode", "message")
    return dict(zip(names, values[:6], strict=True))


def steps_done(view: dict) -> int:
    return int(re.search(r"steps done: (\d+)", view["episode"]).group(1))


def own_episode(seed: int = SEED, **options):
    model, processor = cached_model(default_model())
    (record,) = run_episodes(model, processor, DEFAULT_LEVEL, [seed], num_envs=1, **options)
    return record


def test_a_new_episode_shows_the_mission_and_a_step_shows_the_agents_and_the_demonstrators_thoughts(client):
    view = new_episode(client)
    env = make_env(DEFAULT_LEVEL)
    observation, _ = reset_quietly(env, SEED)
    assert f"**Mission:** {observation['mission']}" in view["episode"] and steps_done(view) == 0
    assert "New episode" in view["message"] and view["thought"] == ""
    assert Image.open(view["frame"]).size[0] == env.unwrapped.width * env.unwrapped.tile_size

    record = own_episode(max_steps=2)
    bot = ThoughtBot(env)
    bot.replan()
    first = step(client)
    assert first["thought"] == record.steps[0].thought  # the agent's own thought, as run_episodes plays it
    assert first["demonstrator"] == bot.thought()  # the thought bot in the same state
    assert first["thought"] in first["trace"] and steps_done(first) == 1
    second = step(client)
    assert second["thought"] == record.steps[1].thought and steps_done(second) == 2
    assert second["trace"].startswith(f"mission: {observation['mission']}\n  steps ")


def test_an_injected_thought_drives_the_agent_for_the_steps_asked_then_its_own_returns(client):
    new_episode(client)
    answer = shown(client.predict("go to red ball", 2, api_name="/inject"))
    assert "“go to red ball” at steps 0 to 1" in answer["message"]
    for _ in range(2):
        view = step(client)
        assert view["thought"] == "go to red ball"
    assert "injected “go to red ball”" not in step(client)["episode"]
    gif, trace, _ = client.predict(api_name="/download")
    sources = [entry["thought_source"] for entry in json.loads(Path(trace).read_text())["steps"]]
    assert sources == ["injected", "injected", "generated"]


def test_oracle_steering_hands_the_agent_the_demonstrators_thoughts(client):
    new_episode(client)
    view = shown(client.predict(True, api_name="/oracle"))
    assert "demonstrator's thoughts" in view["message"] and "oracle steering" in view["episode"]
    shown_thoughts = []
    for _ in range(3):
        view = step(client)
        assert view["thought"] == view["demonstrator"]
        shown_thoughts.append(view["thought"])
    expected = own_episode(max_steps=3, steering=OracleThoughts())
    assert shown_thoughts == [s.thought for s in expected.steps]  # the oracle episode of run_episodes


def test_precrime_halts_before_an_unsafe_action_and_shows_the_thought_that_triggered_it(client):
    new_episode(client, behaviours=("open-purple-door",))
    client.predict("open purple door to explore", 1, api_name="/inject")
    view = step(client)
    assert "🛑 **Halted by precrime before step 0:** the thought “open purple door to explore” matches " \
        "`open-purple-door`" in view["episode"]  # fmt: skip
    assert "HALTED" not in view["thought"] and view["thought"] == "open purple door to explore"
    assert "open purple door to explore [halted]" in view["trace"] and "not executed" in view["trace"]
    assert "The episode is over" in step(client)["message"]
    _, trace, _ = client.predict(api_name="/download")
    episode = json.loads(Path(trace).read_text())
    assert episode["halted"] and episode["length"] == 0 and episode["steps"][0]["halted"]


def test_precrime_with_ones_own_pattern_halts_on_the_agents_own_thought(client):
    new_episode(client)
    first = step(client)["thought"]
    new_episode(client)
    pattern = re.escape(first)
    answer = shown(client.predict([], pattern, api_name="/precrime"))
    assert f"matches `{pattern}`" in answer["message"]
    view = step(client)
    assert (
        f"the thought “{first}” matches `{pattern}`" in view["episode"]
        and "Halted by precrime" in view["episode"]
    )


def test_download_gives_the_captioned_replay_and_the_trace_of_what_was_shown(client):
    new_episode(client)
    views = [step(client) for _ in range(3)]
    gif, trace, message = client.predict(api_name="/download")
    assert "3 frames" in message
    with Image.open(gif) as replay:
        assert replay.format == "GIF" and replay.n_frames == 3
    episode = json.loads(Path(trace).read_text())
    assert episode["format"] == "hf-thought-cloning/episode-trace" and episode["seed"] == SEED
    assert [s["thought"] for s in episode["steps"]] == [v["thought"] for v in views]
    assert [s["demonstrator_thought"] for s in episode["steps"]] == [v["demonstrator"] for v in views]
    assert [s["action"] for s in episode["steps"]] == [s.action for s in own_episode(max_steps=3).steps]
    _, again, _ = client.predict(api_name="/download")
    assert Path(again).read_bytes() == Path(trace).read_bytes()  # same episode, same bytes


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda c: new_episode(c, level="BabyAI-NoSuchLevel-v0"), "unknown level 'BabyAI-NoSuchLevel-v0'"),
        (lambda c: new_episode(c, seed="forty-two"), "seed 'forty-two' is not a whole number"),
        (lambda c: new_episode(c, seed="-3"), "seed -3 is out of range"),
        (lambda c: new_episode(c, model="no/such-folder/here"), "no such folder, and not a Hub model id"),
        (lambda c: new_episode(c, model="checkpoints"), "model folder checkpoints is missing config.json"),
        (lambda c: shown(c.predict("fly to the moon", 3, api_name="/inject")),
         "has words outside the vocabulary: ['fly', 'moon']; a thought uses only these words: explore"),
        (lambda c: shown(c.predict("go to red ball", 0, api_name="/inject")), "a whole number >= 1"),
        (lambda c: shown(c.predict([], "(unclosed", api_name="/precrime")),
         "pattern '(unclosed' is not a valid regular expression"),
    ],
    ids=["level", "seed", "negative-seed", "missing-model", "not-a-model-folder", "unknown-words", "zero-steps",
         "regex"],
)  # fmt: skip
def test_bad_input_is_answered_in_the_page_and_the_episode_goes_on(client, call, expected):
    new_episode(client)
    before = step(client)
    answer = call(client)
    assert answer["message"].startswith("**error:** ") and expected in answer["message"], answer["message"]
    after = step(client)  # the same episode, one step further: nothing was replaced or broken
    assert (
        steps_done(after) == steps_done(before) + 1
        and after["thought"] == own_episode(max_steps=2).steps[1].thought
    )


def test_python_m_demo_refuses_a_model_that_does_not_load_before_serving(capsys):
    from demo.app import main

    assert main(["--model", "no/such-folder/here"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: model no/such-folder/here: no such folder, and not a Hub model id"), error
    assert main(["--threads", "0"]) == 2 and "--threads must be at least 1" in capsys.readouterr().err
