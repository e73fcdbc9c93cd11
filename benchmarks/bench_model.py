"""Training throughput of ThoughtCloningModel: the batched forward against a step-by-step baseline.

The baseline is the straightforward implementation, written here: at every step it encodes that step's
frames, the mission, the previous and the current thought, decodes that step's thought, and runs both
levels, with the model's own modules (so both compute the same loss, which is checked). The batched
forward encodes all frames at once, each distinct mission and thought once per batch, and decodes all
teacher-forced thoughts in one call after the recurrence.

Frames/s counts valid (non-padding) steps per second of forward + backward. Peak memory is the peak
resident-set growth during the measurement (sampled every 2 ms; the allocator releases large tensors
between measurements, so measurements in one process do not inherit each other's peak).

    python benchmarks/bench_model.py --sizes small,paper --batch-size 16 --window 20
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator

import torch
from model_sizes import MODEL_SIZES  # benchmarks/model_sizes.py (the script's folder is on sys.path)
from torch.nn import functional as F

from dataset_builder.episodes import make_env, run_episode
from hf_thought_cloning import (
    ThoughtCloningConfig,
    ThoughtCloningModel,
    ThoughtCloningProcessor,
    ThoughtCloningTokenizer,
)
from hf_thought_cloning.modeling_thought_cloning import IGNORE_INDEX, thought_targets, trim_padding


def step_by_step_loss(model: ThoughtCloningModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The paper's loss computed one step at a time, re-encoding everything every step."""
    config = model.config
    images, mission_ids, actions = batch["images"], batch["mission_input_ids"], batch["actions"]
    thought_ids = trim_padding(batch["thought_input_ids"], config.pad_token_id)
    size, steps = actions.shape
    memory = model.initial_memory(size)
    valid = batch["step_mask"] & (actions != IGNORE_INDEX)
    total = torch.zeros(())
    for t in range(steps):
        visual = model.visual_encoder(images[:, t])
        mission = model.text_reader.encode(mission_ids, "mission")
        thought = None
        if config.has_thought_generator:
            previous_ids = thought_ids[:, t - 1] if t > 0 else memory.previous_thought_ids
            previous = model.text_reader.encode(previous_ids, "thought")
            upper_hidden, upper_cell, history_hidden, history_cell = model.thought_generator.step(
                visual, mission, previous, memory
            )
            thought = model.text_reader.encode(thought_ids[:, t], "thought")
            word_logits, _ = model.thought_generator.decode(
                model.upper_level.decoder_inputs(thought_ids[:, t]), upper_hidden, upper_cell
            )
            targets = thought_targets(thought_ids[:, t], config.eos_token_id, config.pad_token_id)
            targets = targets.masked_fill(~valid[:, t, None], IGNORE_INDEX)
            nll = F.cross_entropy(word_logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
            total = total + config.thought_loss_weight * nll
        logits, lower_hidden, lower_cell = model.action_generator.step(
            visual, mission, thought, memory.lower_hidden, memory.lower_cell
        )
        log_probs = logits[valid[:, t]].log_softmax(-1)
        cross_entropy = F.nll_loss(log_probs, actions[valid[:, t], t], reduction="sum")
        entropy = -(log_probs.exp() * log_probs).sum()
        total = total + cross_entropy - config.entropy_coef * entropy
        memory.lower_hidden, memory.lower_cell = lower_hidden, lower_cell
        if config.has_thought_generator:
            memory.upper_hidden, memory.upper_cell = upper_hidden, upper_cell
            memory.history_hidden, memory.history_cell = history_hidden, history_cell
    return total / valid.sum()


@contextlib.contextmanager
def peak_rss_growth() -> Iterator[dict[str, float]]:
    """Peak growth of this process's resident set (MiB) while the block runs."""
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * page

    result, start, stop = {"peak_mib": 0.0}, rss(), threading.Event()

    def sample() -> None:
        peak = start
        while not stop.is_set():
            peak = max(peak, rss())
            time.sleep(0.002)
        result["peak_mib"] = max(peak, rss()) - start
        result["peak_mib"] /= 2**20

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield result
    finally:
        stop.set()
        sampler.join()


def measure(runs: dict[str, Callable[[], torch.Tensor]], frames: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Best frames/s over ``repeats`` forward+backward runs of each implementation (after one warm-up), and
    peak RSS growth (MiB). Implementations take turns, so a busy machine slows them alike."""
    for run in runs.values():
        run().backward()
    timings: dict[str, list[float]] = {name: [] for name in runs}
    peaks: dict[str, float] = dict.fromkeys(runs, 0.0)
    for _ in range(repeats):
        for name, run in runs.items():
            with peak_rss_growth() as memory:
                start = time.perf_counter()
                run().backward()
                timings[name].append(time.perf_counter() - start)
            peaks[name] = max(peaks[name], memory["peak_mib"])
    return {name: (frames / min(timings[name]), peaks[name]) for name in runs}


def real_batch(level: str, batch_size: int, window: int) -> dict[str, torch.Tensor]:
    env = make_env(level)
    episodes, seed = [], 0
    while len(episodes) < batch_size:
        episode = run_episode(env, level, seed)
        seed += 1
        if hasattr(episode, "actions") and episode.num_steps >= window:
            episodes.append(episode)
    processor = ThoughtCloningProcessor(ThoughtCloningTokenizer())
    return next(processor.windows(processor.collate_episodes(episodes), window))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="small,paper", help=f"comma-separated, from {sorted(MODEL_SIZES)}")
    parser.add_argument("--variants", default="tc,bc", help="comma-separated: tc, bc")
    parser.add_argument("--level", default="BabyAI-MiniBossLevel-v0")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--window", type=int, default=20, help="time steps per sequence (BPTT window)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch = real_batch(args.level, args.batch_size, args.window)
    frames = int(batch["step_mask"].sum())
    distinct = len({tuple(row) for row in batch["thought_input_ids"].flatten(0, 1).tolist()})
    print(f"# bench_model: {datetime.date.today()}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {args.threads} thread(s)")
    print(f"# {args.level}: {args.batch_size} episodes x {args.window} steps = {frames} frames, "
          f"{distinct} distinct thoughts\n")
    print("| size | variant | params | step-by-step frames/s | batched frames/s | speed-up | "
          "teacher forcing off frames/s | peak MiB step-by-step / batched / TF off |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        for variant in args.variants.split(","):
            config_kwargs = MODEL_SIZES[size]
            config = ThoughtCloningConfig.behavioral_cloning(**config_kwargs) if variant == "bc" else ThoughtCloningConfig(**config_kwargs)
            torch.manual_seed(0)
            model = ThoughtCloningModel(config).train()
            params = sum(p.numel() for p in model.parameters())
            batched_loss = model(**batch).loss
            baseline_loss = step_by_step_loss(model, batch)
            torch.testing.assert_close(batched_loss, baseline_loss, rtol=1e-4, atol=1e-4)
            runs = {
                "step_by_step": lambda model=model: step_by_step_loss(model, batch),
                "batched": lambda model=model: model(**batch).loss,
            }
            if config.has_thought_generator:
                runs["teacher_forcing_off"] = lambda model=model: model(**batch, teacher_forcing=False).loss
            results = measure(runs, frames, args.repeats)
            (base_fps, base_mib), (fast_fps, fast_mib) = results["step_by_step"], results["batched"]
            off_fps, off_mib = results.get("teacher_forcing_off", (float("nan"), float("nan")))
            off = f"{off_fps:,.0f}" if config.has_thought_generator else "n/a (no thoughts)"
            print(f"| {size} | {variant.upper()} | {params:,} | {base_fps:,.0f} | {fast_fps:,.0f} | "
                  f"{fast_fps / base_fps:.2f}x | {off} | {base_mib:,.0f} / {fast_mib:,.0f} / {off_mib:,.0f} |", flush=True)
            del model


if __name__ == "__main__":
    main()
