"""Rollout throughput: environment steps/s with the model in the loop, against bare environment stepping.

With the model: ``run_episodes`` at batch (num_envs) 1, 16 and 64; episodes are capped at ``--max-steps``
so every batch stays full, and there are ``--rounds`` seeds per environment. Bare: the same number of
environments stepped one after the other with uniformly random actions (reset when an episode ends), in
the same process. ``model cost / env cost`` at a batch is (time with the model - bare time) / bare time for
the same number of steps: below 1 means the batched model costs less than the environments themselves.
The baseline, in the same process and interleaved with the rest: rollouts as they were before each episode's
mission was encoded once (``act`` encoded every row's mission at every step).

    python benchmarks/bench_rollout.py --size small --level BabyAI-MiniBossLevel-v0
    python benchmarks/bench_rollout.py --model checkpoints/thought-cloning-minibosslevel-5m-frames \
        --level BabyAI-BossLevel-v0 --max-steps 64   # a trained model: thoughts stop at <eos>
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time

import numpy as np
import torch
from model_sizes import MODEL_SIZES  # benchmarks/model_sizes.py (the script's folder is on sys.path)

from dataset_builder.episodes import make_env, reset_quietly
from hf_thought_cloning import (
    ThoughtCloningConfig,
    ThoughtCloningModel,
    ThoughtCloningProcessor,
    ThoughtCloningTokenizer,
)
from hf_thought_cloning.rollouts import run_episodes


def bare_steps_per_second(level: str, num_envs: int, steps: int, seed: int = 20_000_000) -> float:
    envs = [make_env(level) for _ in range(num_envs)]
    rng = np.random.default_rng(0)
    for index, env in enumerate(envs):
        reset_quietly(env, seed + index)
    next_seed, done = seed + num_envs, 0
    started = time.perf_counter()
    while done < steps:
        for env in envs:
            _, _, terminated, truncated, _ = env.step(int(rng.integers(7)))
            done += 1
            if terminated or truncated:
                reset_quietly(env, next_seed)
                next_seed += 1
    return done / (time.perf_counter() - started)


class EncodeMissionsEveryStep:
    """The baseline: the model as rollouts drove it before they kept each episode's encoded mission, so that
    ``act`` encoded every row's mission at every step (its ``mission_features`` is dropped, and the per-episode
    encoding it replaces costs nothing here)."""

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def encode_missions(self, mission_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows, width = mission_ids.shape
        return torch.zeros(rows, width, self._model.config.text_dim), torch.ones(rows, width, dtype=torch.bool)

    def act(self, observations, memory=None, *, mission_features=None, **kwargs):
        return self._model.act(observations, memory, **kwargs)


def model_steps_per_second(model, processor, level: str, num_envs: int, rounds: int, max_steps: int) -> float:
    seeds = range(20_000_000, 20_000_000 + num_envs * rounds)
    started = time.perf_counter()
    records = run_episodes(model, processor, level, seeds, num_envs=num_envs, max_steps=max_steps)
    return sum(record.length for record in records) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="small", choices=sorted(MODEL_SIZES))
    parser.add_argument("--model", default=None, help="a trained model folder (instead of a random --size model)")
    parser.add_argument(
        "--text-encoder",
        default=None,
        help="a pretrained encoder folder: a fresh --size agent that reads its texts with it (e.g. MiniLM)",
    )
    parser.add_argument("--level", default="BabyAI-MiniBossLevel-v0")
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--rounds", type=int, default=2, help="seeds per environment")
    parser.add_argument("--max-steps", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved measurements of each setting (medians reported)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model:
        model = ThoughtCloningModel.from_pretrained(args.model).eval()
        processor = ThoughtCloningProcessor.from_pretrained(args.model)
    elif args.text_encoder:
        model = ThoughtCloningModel.from_text_encoder(args.text_encoder, **MODEL_SIZES[args.size]).eval()
        processor = ThoughtCloningProcessor(ThoughtCloningTokenizer())
    else:
        model = ThoughtCloningModel(ThoughtCloningConfig(**MODEL_SIZES[args.size])).eval()
        processor = ThoughtCloningProcessor(ThoughtCloningTokenizer())
    parameters = sum(p.numel() for p in model.parameters())
    print(
        f"# {datetime.date.today()} {platform.processor() or platform.machine()} torch threads={args.threads} "
        f"model={args.model or args.size} text_encoder={args.text_encoder} ({parameters:,} parameters) level={args.level} max_steps={args.max_steps}"
    )
    print(
        "| num_envs | bare env steps/s | with model, missions encoded every step (baseline) | with model "
        "| speed-up | model cost / env cost, baseline -> now |"
    )
    print("|---|---|---|---|---|---|")
    baseline_model = EncodeMissionsEveryStep(model)
    model_steps_per_second(model, processor, args.level, 1, 1, 4)  # warm-up (allocator, first calls)
    for num_envs in (int(b) for b in args.batches.split(",")):
        runs: dict[str, list[float]] = {"bare": [], "baseline": [], "now": []}
        for _ in range(args.repeats):  # interleaved, so that a slower spell of the machine hits every setting
            steps = num_envs * args.rounds * args.max_steps
            runs["bare"].append(bare_steps_per_second(args.level, num_envs, steps))
            for name, acting in (("baseline", baseline_model), ("now", model)):
                runs[name].append(
                    model_steps_per_second(acting, processor, args.level, num_envs, args.rounds, args.max_steps)
                )
        bare, baseline, now = (float(np.median(runs[name])) for name in ("bare", "baseline", "now"))
        print(
            f"| {num_envs} | {bare:,.0f} | {baseline:,.0f} | {now:,.0f} | {now / baseline:.2f}x "
            f"| {model_cost(baseline, bare):.2f} -> {model_cost(now, bare):.2f} |"
        )


def model_cost(with_model: float, bare: float) -> float:
    """(time with the model - bare time) / bare time for the same steps, from the two rates."""
    return (1 / with_model - 1 / bare) / (1 / bare)


if __name__ == "__main__":
    main()
