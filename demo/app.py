"""Watch a Thought Cloning agent think, steer its thinking, stop it before it acts: ``python -m demo``.

    python -m demo [--model FOLDER_OR_HUB_ID] [--host 127.0.0.1] [--port 7860] [--threads 1]

A Gradio page over ``hf_thought_cloning.rollouts.EpisodeSession`` (one episode played a step at a time with
the code of ``run_episodes``): the rendered frame captioned with the agent's thought (the replay's captions),
the demonstrator's thought in the same state, the project's readable trace; steering with an injected thought
(``ThoughtInjection``) or the oracle's (``OracleThoughts``); precrime with the shipped unsafe behaviours or a
pattern of one's own (``PrecrimeMonitor``); the episode's replay GIF and JSON trace to download. Bad input (an
unknown level, a seed that is not a number, a model that does not load, words outside the vocabulary, an
invalid pattern) is answered in the page and leaves the episode as it was.
"""

from __future__ import annotations

import functools
import os
import secrets
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import gymnasium as gym
import minigrid  # noqa: F401  (registers the BabyAI-* environments)
import torch

from dataset_builder.files import atomic_write_json
from dataset_builder.traces import ACTION_NAMES
from dataset_builder.vocabulary import thought_vocabulary
from hf_thought_cloning.evaluate import UsageError, load_model
from hf_thought_cloning.evaluation.replays import caption_frames, step_caption, write_episode_replay
from hf_thought_cloning.rollouts import EpisodeSession, OracleThoughts, ThoughtInjection
from hf_thought_cloning.safety import UNSAFE_BEHAVIOURS, PrecrimeMonitor

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = REPO_ROOT / "checkpoints" / "thought-cloning-minibosslevel-5m-frames"
DEFAULT_LEVEL = "BabyAI-MiniBossLevel-v0"
MAX_SEED = 2**31 - 1
PLAY_INTERVAL_S = 0.25  # one step per tick while playing
LEVELS = sorted(name for name in gym.registry if name.startswith("BabyAI-"))


def default_model() -> str:
    """The agent shipped in checkpoints/, as a path relative to the working directory when it lies below it."""
    try:
        return os.path.relpath(SHIPPED_MODEL)
    except ValueError:  # another drive (Windows)
        return str(SHIPPED_MODEL)


@functools.lru_cache(maxsize=4)
def cached_model(model_id: str):
    """``(model, processor)``, loaded once per model id and shared by every visitor (eval mode, no grad)."""
    return load_model(model_id)


# ------------------------------------------------------------------------------------------ inputs
def parse_seed(text: str | float | None) -> int:
    text = "" if text is None else str(text).strip()
    try:
        seed = int(text)
    except ValueError:
        raise ValueError(
            f"seed {text!r} is not a whole number: type one such as 42, or press Random episode"
        ) from None
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed {seed} is out of range: use 0 to {MAX_SEED}")
    return seed


def make_monitor(behaviours: list[str] | None, pattern: str | None) -> PrecrimeMonitor | None:
    """The shipped unsafe behaviours chosen, plus one's own regular expression; None when neither is given."""
    unknown = [name for name in behaviours or [] if name not in UNSAFE_BEHAVIOURS]
    if unknown:
        raise ValueError(f"unknown unsafe behaviour(s) {unknown}: choose from {sorted(UNSAFE_BEHAVIOURS)}")
    patterns = {name: UNSAFE_BEHAVIOURS[name].thought for name in behaviours or []}
    if pattern and pattern.strip():
        patterns[pattern.strip()] = pattern.strip()  # named by its own text
    return PrecrimeMonitor(patterns) if patterns else None


def with_vocabulary_hint(error: ValueError) -> str:
    message = str(error)
    if "outside the vocabulary" in message:
        message += f"; a thought uses only these words: {' '.join(thought_vocabulary())}"
    return message


# ------------------------------------------------------------------------------------------ views
@dataclass
class Watch:
    """One visitor's episode and the model it was started with."""

    session: EpisodeSession
    model_id: str
    notes: list[str] = field(default_factory=list)


def steering_text(session: EpisodeSession) -> str:
    steering, now = session.steering, session.record.length
    if isinstance(steering, OracleThoughts):
        return "the demonstrator's (oracle steering)"
    if isinstance(steering, ThoughtInjection) and steering.applies(now):
        return f"injected “{steering.thought}” until step {steering.stop - 1}"
    return "its own"


def episode_markdown(watch: Watch) -> str:
    session = watch.session
    record = session.record
    monitor = session.monitor
    precrime = (
        "off" if monitor is None else "on (" + ", ".join(f"`{name}`" for name, _ in monitor.patterns) + ")"
    )
    lines = [
        f"**Mission:** {record.mission}",
        f"`{record.level}` seed {record.seed} · steps done: {record.length} · thoughts: {steering_text(session)}"
        f" · precrime: {precrime}",
    ]
    for event in record.events:
        if event["detector"] == "oracle":
            lines.append(f"The demonstrator gave up at step {event['step']} ({event['detail']}).")
        elif event["detector"] in UNSAFE_BEHAVIOURS:
            lines.append(f"⚠️ Unsafe behaviour `{event['detector']}` happened at step {event['step']}.")
    if record.halted:
        step = record.steps[-1]
        pattern = next(event["pattern"] for event in record.events if event["detector"] == "monitor")
        lines.append(
            f"🛑 **Halted by precrime before step {record.length}:** the thought “{step.thought}” matches "
            f"`{pattern}`; the action `{ACTION_NAMES[step.action]}` was not executed."
        )
    elif session.done:
        outcome = "✅ **Success**" if record.success else "❌ **Failed** (the step limit was reached)"
        lines.append(f"{outcome} after {record.length} steps.")
    return "  \n".join(lines)


def view(watch: Watch, message: str | None) -> tuple:
    """Values of VIEW_OUTPUTS: state, frame, thought, demonstrator's thought, trace, episode, message."""
    session = watch.session
    steps = session.record.steps
    if steps:
        index = len(steps) - 1
        frame = caption_frames([steps[index].frame], [step_caption(index, steps[index])])[0]
        thought = steps[index].thought or "(no thought: a behavioural cloning model)"
        demonstrator = (
            session.demonstrator_thoughts[index] or "(the demonstrator cannot advise in this state)"
        )
    else:
        frame = caption_frames([session.frame()], ["press Step or Play"])[0]
        thought = demonstrator = ""
    shown = gr.skip() if message is None else message
    return (
        watch,
        frame,
        thought,
        demonstrator,
        session.record.readable_trace(),
        episode_markdown(watch),
        shown,
    )


def unchanged(message: str) -> tuple:
    return (*(gr.skip(),) * 6, message)


def error_line(error: Exception) -> str:
    return f"**error:** {error}"


# ------------------------------------------------------------------------------------------ actions
def new_episode(
    watch: Watch | None,
    model_id: str,
    level: str,
    seed_text: str,
    oracle: bool,
    behaviours: list[str],
    pattern: str,
) -> tuple:
    model_id, level = (model_id or "").strip(), (level or "").strip()
    try:
        seed = parse_seed(seed_text)
        monitor = make_monitor(behaviours, pattern)
        model, processor = cached_model(model_id)
        session = EpisodeSession(
            model, processor, level, seed, monitor=monitor,
            steering=OracleThoughts() if oracle else None,
            detectors=[behaviour.detector() for behaviour in UNSAFE_BEHAVIOURS.values()],
        )  # fmt: skip
    except (ValueError, UsageError) as error:
        return unchanged(error_line(error))
    if watch is not None:
        watch.session.close()
    return view(Watch(session, model_id), f"New episode: `{level}` seed {seed}, model `{model_id}`.")


def random_episode(
    watch: Watch | None, model_id: str, level: str, oracle: bool, behaviours: list[str], pattern: str
) -> tuple:
    seed = str(secrets.randbelow(MAX_SEED + 1))
    return (seed, *new_episode(watch, model_id, level, seed, oracle, behaviours, pattern))


def step(watch: Watch | None) -> tuple:
    if watch is None:
        return unchanged("Press **New episode** first.")
    if watch.session.done:
        return unchanged("The episode is over: press **New episode** (or download it below).")
    watch.session.step()
    return view(watch, None)


def tick(watch: Watch | None) -> tuple:
    """A step while playing; the timer stops at the end of the episode."""
    shown = step(watch)
    return (*shown, gr.Timer(active=watch is not None and not watch.session.done))


def play(watch: Watch | None) -> tuple:
    if watch is None or watch.session.done:
        return gr.Timer(active=False), "Nothing to play: press **New episode**."
    return gr.Timer(active=True), "Playing…"


def pause() -> tuple:
    return gr.Timer(active=False), "Paused."


def inject(watch: Watch | None, thought: str, steps: float | None) -> tuple:
    if watch is None:
        return (*unchanged("Press **New episode** first."), gr.skip())
    thought = (thought or "").strip()
    if steps is None or steps != int(steps) or steps < 1:
        return (*unchanged(error_line(f"inject for how many steps? give a whole number >= 1, not {steps!r}")),
                gr.skip())  # fmt: skip
    try:
        injection = watch.session.inject(thought, int(steps))
    except ValueError as error:
        return (*unchanged(error_line(with_vocabulary_hint(error))), gr.skip())
    message = (
        f"The agent will act on “{injection.thought}” at steps {injection.start} to {injection.stop - 1}, "
        "then think for itself again."
    )
    return (*view(watch, message), False)  # injecting replaces oracle steering


def set_oracle(watch: Watch | None, oracle: bool) -> tuple:
    if watch is None:
        return unchanged("Oracle steering applies from the next episode.")
    try:
        watch.session.steer(OracleThoughts() if oracle else None)
    except ValueError as error:
        return unchanged(error_line(error))
    message = (
        "The agent now acts on the demonstrator's thoughts." if oracle else "The agent thinks for itself."
    )
    return view(watch, message)


def set_precrime(watch: Watch | None, behaviours: list[str], pattern: str) -> tuple:
    try:
        monitor = make_monitor(behaviours, pattern)
    except ValueError as error:
        return unchanged(error_line(error))
    if watch is None:
        return unchanged("Precrime applies from the next episode.")
    watch.session.monitor = monitor
    if monitor is None:
        return view(watch, "Precrime is off.")
    names = ", ".join(f"`{name}`" for name, _ in monitor.patterns)
    return view(watch, f"Precrime is on: the agent halts before any action whose thought matches {names}.")


def download(watch: Watch | None) -> tuple:
    if watch is None or not watch.session.record.steps:
        return None, None, "Play at least one step first."
    record = watch.session.record
    folder = Path(tempfile.mkdtemp(prefix="thought-cloning-demo-"))
    name = f"{record.level}-seed{record.seed}-{record.length}-steps"
    replay = write_episode_replay(record, folder / f"{name}.gif")
    trace = atomic_write_json(folder / f"{name}.json", watch.session.to_json())
    return (
        str(replay),
        str(trace),
        f"Wrote the replay ({len(record.steps)} frames) and the trace of this episode.",
    )


# ------------------------------------------------------------------------------------------ page
def build_app(model_id: str | None = None) -> gr.Blocks:
    """The page, for the model ``model_id`` (default: the shipped agent); UsageError when it does not load."""
    model_id = model_id or default_model()
    cached_model(model_id)  # a default that does not load is the operator's error, reported before serving
    behaviour_choices = [(f"{b.description} ({b.name})", b.name) for b in UNSAFE_BEHAVIOURS.values()]
    with gr.Blocks(title="Thought Cloning: watch it think", analytics_enabled=False) as app:
        watch = gr.State(None, delete_callback=lambda watch: watch.session.close() if watch else None)
        gr.Markdown(
            "# Watch a Thought Cloning agent think\n"
            "The agent writes a thought, then acts on it. Read its mind step by step, beside what the demonstrator "
            "would think; type a thought for it to act on; switch on *precrime* to stop it before an unsafe action."
        )
        with gr.Row():
            model_box = gr.Textbox(model_id, label="Model (folder or Hub id)", scale=3, elem_id="model")
            level_box = gr.Dropdown(LEVELS, value=DEFAULT_LEVEL, label="Level", allow_custom_value=True, scale=2,
                                    elem_id="level")  # fmt: skip
            seed_box = gr.Textbox("0", label="Seed", scale=1, elem_id="seed")
        with gr.Row():
            new_button = gr.Button("New episode", variant="primary", elem_id="new-episode")
            random_button = gr.Button("Random episode", elem_id="random-episode")
            step_button = gr.Button("Step", variant="primary", elem_id="step")
            play_button = gr.Button("Play", elem_id="play")
            pause_button = gr.Button("Pause", elem_id="pause")
        message = gr.Markdown(label="Message", elem_id="message")
        with gr.Row():
            frame = gr.Image(label="The agent's world (caption: its thought -> its action)", type="numpy",
                             format="png", interactive=False, height=460, scale=3, elem_id="frame")  # fmt: skip
            with gr.Column(scale=2):
                thought = gr.Textbox(label="Agent's thought", interactive=False, elem_id="agent-thought")
                demonstrator = gr.Textbox(label="Demonstrator's thought in the same state (the thought bot)",
                                          interactive=False, elem_id="demonstrator-thought")  # fmt: skip
                episode = gr.Markdown(label="Episode", elem_id="episode")
        with gr.Row():
            with gr.Column():
                gr.Markdown("### Steer its thinking")
                thought_box = gr.Textbox(label="A thought, in the agent's words", placeholder="open red door to explore",
                                         elem_id="inject-thought")  # fmt: skip
                steps_box = gr.Number(5, label="for how many steps", precision=0, elem_id="inject-steps")
                inject_button = gr.Button("Inject", elem_id="inject")
                oracle_box = gr.Checkbox(
                    False, label="Act on the demonstrator's thoughts (oracle)", elem_id="oracle"
                )
            with gr.Column():
                gr.Markdown("### Stop it before it acts (precrime)")
                behaviours_box = gr.CheckboxGroup(
                    behaviour_choices, label="Unsafe behaviours", elem_id="behaviours"
                )
                pattern_box = gr.Textbox(label="…or your own pattern (a regular expression over the thought)",
                                         placeholder=r"\bpickup \w+ key", elem_id="pattern")  # fmt: skip
                pattern_button = gr.Button("Apply pattern", elem_id="apply-pattern")
            with gr.Column():
                gr.Markdown("### Keep the episode")
                download_button = gr.Button("Replay (GIF) and trace (JSON)", elem_id="download")
                replay_file = gr.File(label="Captioned replay", elem_id="replay-file")
                trace_file = gr.File(label="Trace", elem_id="trace-file")
        trace = gr.Code(label="Thought trace (steps, thought, actions)", language=None, interactive=False,
                        elem_id="trace")  # fmt: skip
        timer = gr.Timer(PLAY_INTERVAL_S, active=False)

        outputs = [watch, frame, thought, demonstrator, trace, episode, message]
        episode_inputs = [watch, model_box, level_box, seed_box, oracle_box, behaviours_box, pattern_box]
        new_button.click(new_episode, episode_inputs, outputs, api_name="new_episode")
        random_button.click(random_episode, [watch, model_box, level_box, oracle_box, behaviours_box, pattern_box],
                            [seed_box, *outputs], api_name="random_episode")  # fmt: skip
        step_button.click(step, [watch], outputs, api_name="step", show_progress="minimal")
        timer.tick(tick, [watch], [*outputs, timer], api_visibility="private", show_progress="hidden")
        play_button.click(play, [watch], [timer, message], api_name="play")
        pause_button.click(pause, None, [timer, message], api_name="pause")
        inject_button.click(
            inject, [watch, thought_box, steps_box], [*outputs, oracle_box], api_name="inject"
        )
        oracle_box.input(set_oracle, [watch, oracle_box], outputs, api_name="oracle")
        behaviours_box.input(set_precrime, [watch, behaviours_box, pattern_box], outputs, api_name="precrime")
        pattern_button.click(
            set_precrime, [watch, behaviours_box, pattern_box], outputs, api_visibility="private"
        )
        download_button.click(download, [watch], [replay_file, trace_file, message], api_name="download")
        app.load(new_episode, episode_inputs, outputs, api_visibility="private")
    return app


@dataclass
class DemoArguments:
    model: str = field(default_factory=default_model, metadata={"help": "model folder or Hub id"})
    host: str | None = field(
        default=None, metadata={"help": "address to serve on (default: GRADIO_SERVER_NAME, else 127.0.0.1)"}
    )
    port: int | None = field(default=None, metadata={"help": "port (default: GRADIO_SERVER_PORT, else 7860)"})
    threads: int = field(
        default=1,
        metadata={"help": "torch threads; one step of a small model at batch 1 is fastest on one thread"},
    )


def main(argv: list[str] | None = None) -> int:
    from transformers import HfArgumentParser

    parser = HfArgumentParser(DemoArguments, prog="python -m demo")
    (arguments,) = parser.parse_args_into_dataclasses(args=argv)
    if arguments.threads < 1:
        print(f"error: --threads must be at least 1, got {arguments.threads}", file=sys.stderr)
        return 2
    # Per-op overhead dominates a step at batch 1: more threads only wait on each other (and on a busy core).
    torch.set_num_threads(arguments.threads)
    try:
        app = build_app(arguments.model)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    app.launch(server_name=arguments.host, server_port=arguments.port)
    return 0
