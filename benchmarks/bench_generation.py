"""Throughput of the thought-dataset generator against a bare loop of minigrid's BabyAIBot.

Same levels, same seeds, same process. The generator's number includes everything a user pays per
shard: thoughts, records, Arrow conversion, zstd Parquet writing, statistics. Baseline and generator
runs are interleaved (repeats) so that machine load hits both alike; the best repeat of each is kept.

``--whole-process N`` instead times two whole processes on the same N seeds, from the shell's point of
view (interpreter start and imports included): ``python -m dataset_builder generate`` (noise off, so
both play the same episodes) against a bare ``BabyAIBot`` loop in a fresh interpreter. The CLI is the
one ``python -m`` finds from the current directory: run from another checkout to time that version.

    python benchmarks/bench_generation.py --episodes 200 --repeats 3 --scaling-episodes 400
    python benchmarks/bench_generation.py --whole-process 600 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from minigrid.utils.baby_ai_bot import BabyAIBot

from dataset_builder.episodes import make_env, reset_quietly
from dataset_builder.generate import GenerateArgs, generate
from dataset_builder.plan import ShardTask
from dataset_builder.shards import generate_shard


def bare_bot(level: str, seeds: range) -> tuple[float, int]:
    """Seconds and steps for minigrid's bot alone (reset, replan, step), no recording."""
    env, steps = make_env(level), 0
    start = time.perf_counter()
    for seed in seeds:
        reset_quietly(env, seed)
        bot = BabyAIBot(env)
        while True:
            _, _, terminated, truncated, _ = env.step(bot.replan())
            steps += 1
            if terminated or truncated:
                break
    return time.perf_counter() - start, steps


def full_generator(level: str, seeds: range, workdir: Path) -> tuple[float, int, int]:
    """Seconds, stored episodes and Parquet bytes for one shard of the real generator (noise off)."""
    task = ShardTask(level, "train", 0, 1, seeds.start, seeds.stop)
    start = time.perf_counter()
    stats = generate_shard(task, str(workdir), noise_rate=0.0, noise_seed=0)
    seconds = time.perf_counter() - start
    return seconds, stats.episodes, (workdir / task.data_path).stat().st_size


def scaling(level: str, episodes: int, num_proc: int, workdir: Path) -> float:
    """Episodes/s of the whole ``generate`` (process start-up included) with ``num_proc`` workers."""
    output = workdir / f"scaling-{num_proc}"
    args = GenerateArgs(
        output=str(output), level=[level], episodes=episodes, splits="train=1", shard_size=max(1, episodes // 8),
        noise_rate=0.01, num_proc=num_proc,
    )  # fmt: skip
    start = time.perf_counter()
    generate(args)
    seconds = time.perf_counter() - start
    shutil.rmtree(output)
    return episodes / seconds


# minigrid and gymnasium only, as a user would write the loop (level generation's prints swallowed, as the
# generator does); it imports nothing of this project, so it also serves to time an older checkout.
BARE_PROCESS = """
import contextlib, io, sys
import gymnasium as gym
import minigrid
from minigrid.utils.baby_ai_bot import BabyAIBot
level, start, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
env = gym.make(level)
for seed in range(start, stop):
    with contextlib.redirect_stdout(io.StringIO()):
        env.reset(seed=seed)
    bot = BabyAIBot(env)
    while True:
        _, _, terminated, truncated, _ = env.step(bot.replan())
        if terminated or truncated:
            break
"""


def _timed(command: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of a whole process, interpreter start-up included.

    CPU time is what a busy shared machine disturbs least; wall time is what the user waits.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def whole_process(level: str, episodes: int, repeats: int, workdir: Path) -> None:
    """``python -m dataset_builder generate`` against a bare bot loop, each a whole process, same seeds."""
    start, stop = 10_000, 10_000 + episodes
    bare_command = [sys.executable, "-c", BARE_PROCESS, level, str(start), str(stop)]
    bare, full = [], []
    for repeat in range(repeats):
        bare.append(_timed(bare_command))
        output = workdir / f"whole-{repeat}"
        full.append(_timed([
            sys.executable, "-m", "dataset_builder", "generate", "--level", level, "--seeds", f"{start}:{stop}",
            "--splits", "train=1", "--noise-rate", "0", "--output", str(output),
        ]))  # fmt: skip
        shutil.rmtree(output)
    print(f"\n| {level}, seeds {start}-{stop - 1} | bare bot process | `python -m dataset_builder generate` | ratio |")
    print("|---|---|---|---|")
    for index, name in ((0, "wall"), (1, "CPU")):
        best_bare, best_full = min(r[index] for r in bare), min(r[index] for r in full)
        print(f"| {name} seconds, best of {repeats} | {best_bare:.2f} | {best_full:.2f} | **{best_bare / best_full:.3f}** |")
    for index, name in ((0, "wall"), (1, "CPU")):
        listed = [", ".join(f"{r[index]:.2f}" for r in runs) for runs in (bare, full)]
        print(f"| {name} seconds, every repeat | {listed[0]} | {listed[1]} | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", nargs="+", default=["BabyAI-MiniBossLevel-v0", "BabyAI-BossLevel-v0"])
    parser.add_argument("--episodes", type=int, default=200, help="seeds per level and repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scaling-episodes", type=int, default=400, help="0 skips the process-scaling part")
    parser.add_argument("--max-proc", type=int, default=2)
    parser.add_argument(
        "--whole-process", type=int, default=0, metavar="N",
        help="time whole processes on N seeds of the first level instead (generate CLI vs bare bot loop)",
    )  # fmt: skip
    args = parser.parse_args()

    print(f"# bench_generation  {date.today()}  {platform.machine()}  {platform.python_version()}")
    if args.whole_process:
        with tempfile.TemporaryDirectory() as tmp:
            whole_process(args.levels[0], args.whole_process, args.repeats, Path(tmp))
        return
    print("\n| level | bare bot episodes/s | generator episodes/s | bare steps/s | generator steps/s | ratio | bytes/episode |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for level in args.levels:
            seeds = range(10_000, 10_000 + args.episodes)
            bare, full, size = [], [], 0
            for repeat in range(args.repeats):
                bare.append(bare_bot(level, seeds))
                seconds, stored, size = full_generator(level, seeds, workdir / f"r{repeat}")
                full.append(seconds)
            bare_seconds, bare_steps = min(bare)
            full_seconds = min(full)
            # Noise off, both play the same episodes (actions are identical: tests/test_thoughts.py), so
            # the steps played are the same; failed episodes are played but not stored.
            full_steps = bare_steps
            print(
                f"| {level} | {args.episodes / bare_seconds:.1f} | {args.episodes / full_seconds:.1f} | "
                f"{bare_steps / bare_seconds:.0f} | {full_steps / full_seconds:.0f} | "
                f"{bare_seconds / full_seconds:.3f} | {size / max(stored, 1):.0f} |"
            )
        if args.scaling_episodes:
            level = args.levels[0]
            print(f"\n| processes | {level} episodes/s (whole run, start-up included) | speed-up |")
            print("|---|---|---|")
            base = None
            for num_proc in range(1, args.max_proc + 1):
                rate = scaling(level, args.scaling_episodes, num_proc, workdir)
                base = base or rate
                print(f"| {num_proc} | {rate:.1f} | {rate / base:.2f} |")


if __name__ == "__main__":
    main()
