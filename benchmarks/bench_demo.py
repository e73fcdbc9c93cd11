"""One step of the demo, against the environment step alone, in the same process.

Per step, median over ``--steps`` steps (episodes of ``--level`` from seed 20,000,000 on, a new one when one
ends), each layer adding to the one before:

* ``env``: ``env.step`` with the agent's recorded actions, plus ``env.render()`` (the demo shows every frame);
* ``session``: ``EpisodeSession.step``: the model's ``act``, the thought bot beside it, the env step and render;
* ``page``: the app's Step handler: the session step, the captioned frame, the trace, the episode text;
* ``http``: a Step click's round trip through ``gradio_client`` to the app served on 127.0.0.1 (request,
  queue, PNG encoding, the answer and the frame's download), what a visitor waits for; and, interleaved with
  it, a Pause click's (a handler that does nothing), which is Gradio's own cost per event.

    python benchmarks/bench_demo.py --steps 200 [--model checkpoints/thought-cloning-minibosslevel-2m-frames]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import socket
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the demo/ folder is not an installed package

from dataset_builder.episodes import reset_quietly  # noqa: E402
from demo import app as demo_app  # noqa: E402
from hf_thought_cloning.rollouts import EpisodeSession  # noqa: E402

FIRST_SEED = 20_000_000


def episodes(model, processor, level: str, steps: int):
    """Sessions played to ``steps`` steps in all, each with its per-step seconds."""
    sessions, seed, left = [], FIRST_SEED, steps
    while left > 0:
        session = EpisodeSession(model, processor, level, seed)
        times = []
        while not session.done and left > 0:
            started = time.perf_counter()
            session.step()
            times.append(time.perf_counter() - started)
            left -= 1
        sessions.append((session, times))
        seed += 1
    return sessions


def env_times(sessions) -> list[float]:
    """The same episodes' actions replayed in a bare rendering environment."""
    import gymnasium as gym

    times = []
    for session, _ in sessions:
        record = session.record
        env = gym.make(record.level, render_mode="rgb_array")
        reset_quietly(env, record.seed)
        for step in record.steps:
            started = time.perf_counter()
            env.step(step.action)
            env.render()
            times.append(time.perf_counter() - started)
        env.close()
    return times


def page_times(model_id: str, level: str, steps: int) -> list[float]:
    watch = demo_app.new_episode(None, model_id, level, str(FIRST_SEED), False, [], "")[0]
    times, seed = [], FIRST_SEED
    for _ in range(steps):
        if watch.session.done:
            seed += 1
            watch = demo_app.new_episode(watch, model_id, level, str(seed), False, [], "")[0]
        started = time.perf_counter()
        demo_app.step(watch)
        times.append(time.perf_counter() - started)
    return times


def http_times(model_id: str, level: str, steps: int) -> tuple[list[float], list[float]]:
    """Round trips of Step clicks, and of Pause clicks (a handler with no work: Gradio's own cost)."""
    from gradio_client import Client

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = demo_app.build_app(model_id)
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        step_times, pause_times, seed = [], [], FIRST_SEED
        client.predict(model_id, level, str(seed), False, [], "", api_name="/new_episode")
        while len(step_times) < steps:
            started = time.perf_counter()
            episode = client.predict(api_name="/step")[4]
            step_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            client.predict(api_name="/pause")
            pause_times.append(time.perf_counter() - started)
            if "Success" in episode or "Failed" in episode:
                seed += 1
                client.predict(model_id, level, str(seed), False, [], "", api_name="/new_episode")
        return step_times, pause_times
    finally:
        app.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=demo_app.default_model())
    parser.add_argument("--level", default=demo_app.DEFAULT_LEVEL)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the demo's default: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, processor = demo_app.cached_model(args.model)
    parameters = sum(p.numel() for p in model.parameters())
    episodes(model, processor, args.level, 5)  # warm-up (allocator, first calls)
    sessions = episodes(model, processor, args.level, args.steps)
    rows = {
        "env (step + render)": env_times(sessions),
        "session (act + bot + env + render)": [t for _, times in sessions for t in times],
        "page (Step handler)": page_times(args.model, args.level, args.steps),
    }
    rows["http: Step click (gradio_client round trip)"], rows["http: Pause click (no work; Gradio's own)"] = (
        http_times(args.model, args.level, args.steps)
    )
    base = statistics.median(rows["env (step + render)"])
    print(
        f"# {datetime.date.today()} {platform.processor() or platform.machine()} torch threads={args.threads} "
        f"model={args.model} ({parameters:,} parameters) level={args.level} steps={args.steps}"
    )
    print("| layer | median ms/step | 90th percentile ms | / env |")
    print("|---|---|---|---|")
    for name, times in rows.items():
        median = statistics.median(times)
        p90 = statistics.quantiles(times, n=10)[-1]
        print(f"| {name} | {median * 1000:.1f} | {p90 * 1000:.1f} | {median / base:.1f} |")


if __name__ == "__main__":
    main()
