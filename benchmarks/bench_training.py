"""Training speed: how the trainer uses the machine, and whether the pipeline is the bottleneck.

``--mode settings`` (issue 11): whole train/run.py runs launched as a user launches them, at the study size,
for TC with teacher forcing on and off and for BC, in three settings: one process with one thread, one
process with two threads, two DDP processes (gloo) with one thread each. For each: frames/s, FLOPs per frame
(``torch.utils.flop_counter`` over one forward+backward of the first batch) and the share of the machine's
peak FP32 rate that makes. ``--baseline REF`` runs the same commands on the code of git REF as well (a
temporary ``git worktree``), so speed-ups are ratios measured side by side:

    python benchmarks/bench_training.py --mode settings --dataset DIR --baseline eb99ab3

``--mode pipeline``: for each (model size, variant), in one process:
  1. end to end: train/run.py's ``main`` for ``--updates`` updates (data loading, batching, the loop, metrics
     and logging included; validation and tracker off), frames/s read from its trainer_log.jsonl;
  2. model alone: forward + backward + optimiser step on the very same batches, collated beforehand.
The ratio (1) / (2) should be >= 0.9. The first ``--warmup`` updates of each are not timed.

    python benchmarks/bench_training.py --dataset outputs/quickstart/minibosslevel-thoughts
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from model_sizes import MODEL_SIZES  # benchmarks/model_sizes.py (the script's folder is on sys.path)

from hf_thought_cloning.training.data import EpisodeStore, batch_order, dataset_layout, load_split

REPO_ROOT = Path(__file__).resolve().parents[1]


def trainer():
    spec = importlib.util.spec_from_file_location("train_run", REPO_ROOT / "train" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_run"] = module
    spec.loader.exec_module(module)
    return module


def end_to_end(run, dataset: str, size: str, variant: str, batch_size: int, updates: int, warmup: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        flags = [f"--{k}={v}" for k, v in MODEL_SIZES[size].items()]
        run.main([
            "--dataset", dataset, "--output_dir", folder, "--variant", variant, *flags, "--batch_size", str(batch_size),
            "--epochs", "1000", "--stop_after_updates", str(updates), "--validation_every_epochs", "0",
            "--report_to", "none", "--logging_steps", "1", "--cpu", "--keep_last_checkpoints", "1",
            "--stop_teacher_forcing_epoch", "1000",
        ])  # fmt: skip
        log = [json.loads(line) for line in (Path(folder) / "trainer_log.jsonl").read_text().splitlines()]
    frames = [b["train/frames"] - a["train/frames"] for a, b in zip(log, log[1:], strict=False)]
    seconds = [f / entry["train/frames_per_second"] for f, entry in zip(frames, log[1:], strict=True)]
    return sum(frames[warmup - 1 :]) / sum(seconds[warmup - 1 :])


def model_alone(run, dataset: str, size: str, variant: str, batch_size: int, updates: int, warmup: int) -> float:
    args = run.TrainArgs(variant=variant, **MODEL_SIZES[size])
    torch.manual_seed(0)
    model, processor = run.build_model(args)
    model.train()
    # Read like the trainer reads a local folder (load_dataset's cache can serve a regenerated folder stale).
    split = load_split(dataset, next(iter(dataset_layout(dataset))), "train")
    store = EpisodeStore.from_table(split.data.table, processor)
    batches = [store.collate(batch_order(store.lengths, batch_size, 0, u)) for u in range(updates)]
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4, eps=1e-5)
    teacher_forcing = model.config.has_thought_generator and variant != "no-thought-supervision"
    frames, start = 0, 0.0
    for update, batch in enumerate(batches):
        if update == warmup:
            start, frames = time.perf_counter(), 0
        total, memory = int(batch["step_mask"].sum()), None
        for window in processor.windows(batch, 80):
            output = model(**window, memory=memory, teacher_forcing=teacher_forcing)
            (output.loss * (int(window["step_mask"].sum()) / total)).backward()
            memory = output.memory.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        frames += total
    return frames / (time.perf_counter() - start)


# ------------------------------------------------------------------------------------ --mode settings
SETTINGS = {"1 process x 1 thread": (1, 1), "1 process x 2 threads": (1, 2), "2 DDP processes x 1 thread": (2, 1)}
# variant, teacher forcing on?
AGENTS = {"TC, teacher forcing on": ("thought-cloning", True), "TC, teacher forcing off": ("thought-cloning", False),
          "BC": ("behavioral-cloning", False)}  # fmt: skip
AGENT_NAMES = dict(zip(("tc", "tc-free", "bc"), AGENTS, strict=True))  # --agents


def fp32_flops_per_cycle() -> tuple[int, str]:
    """Peak FP32 FLOPs per cycle per core from the CPU's flags: FMA units x vector lanes x 2.

    Two FMA units per core throughout; AMD before Zen 5 (family 0x19) executes AVX-512 on 256-bit units."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    amd_family = int(fields.get("cpu family", "0")) if fields.get("vendor_id") == "AuthenticAMD" else None
    if "avx512f" in flags and not (amd_family is not None and amd_family < 0x1A):
        return 64, "AVX-512, 2 FMA units"
    if "avx2" in flags and "fma" in flags:
        return 32, "AVX2 (or AVX-512 on 256-bit units), 2 FMA units"
    return 8, "SSE, 2 units"


def clock_ghz() -> float:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("cpu MHz"):
            return float(line.split(":")[1]) / 1000
    raise SystemExit("error: no 'cpu MHz' in /proc/cpuinfo: the peak FP32 rate needs the clock")


def flops_per_frame(tree: Path, dataset: str, variant: str, teacher_forcing: bool, batch_size: int) -> float:
    """Counted matmul/conv/attention FLOPs of one forward+backward over the first batch, per valid frame."""
    code = f"""
import importlib.util, json, sys, torch
from torch.utils.flop_counter import FlopCounterMode
spec = importlib.util.spec_from_file_location("train_run", {str(tree / "train" / "run.py")!r})
run = importlib.util.module_from_spec(spec); sys.modules["train_run"] = run; spec.loader.exec_module(run)
from hf_thought_cloning.training.data import EpisodeStore, batch_order, dataset_layout, load_split
args = run.TrainArgs(variant={variant!r}, entropy_coef=0.01, thought_loss_weight={2.0 if variant == "thought-cloning" else 0.0},
                     **{MODEL_SIZES["quickstart"]!r})
torch.manual_seed(0)
model, processor = run.build_model(args)
model.train()
split = load_split({dataset!r}, next(iter(dataset_layout({dataset!r}))), "train")
store = EpisodeStore.from_table(split.data.table, processor)
batch = store.collate(batch_order(store.lengths, {batch_size}, 0, 0))
with FlopCounterMode(display=False) as counter:
    memory = None
    for window in processor.windows(batch, 80):
        output = model(**window, memory=memory, teacher_forcing={teacher_forcing})
        output.loss.backward()
        memory = output.memory.detach()
print(json.dumps(counter.get_total_flops() / int(batch["step_mask"].sum())))
"""
    result = subprocess.run([sys.executable, "-c", code], env=tree_env(tree, 1), capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"error: counting FLOPs failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def tree_env(tree: Path, threads: int) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def launched_run(tree: Path, dataset: str, setting: tuple[int, int], variant: str, teacher_forcing: bool,
                 batch_size: int, updates: int, warmup: int) -> float:  # fmt: skip
    """frames/s of a whole train/run.py run launched with accelerate, updates after ``warmup``."""
    processes, threads = setting
    with tempfile.TemporaryDirectory() as folder:
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision",
                    "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", str(threads)]  # fmt: skip
        env = tree_env(tree, threads)
        if processes == 1:
            launcher += ["--num_processes", "1", "--cpu"]
        else:  # accelerate's --cpu with --num_processes 2 runs one process (docs/TRAINING.md)
            launcher += ["--multi_gpu", "--num_processes", str(processes)]
            env["ACCELERATE_USE_CPU"] = "1"
        flags = [f"--{k}={v}" for k, v in MODEL_SIZES["quickstart"].items()]
        command = [
            *launcher, str(tree / "train" / "run.py"), "--dataset", dataset, "--output_dir", folder, "--overwrite",
            "--variant", variant, *flags, "--batch_size", str(batch_size), "--epochs", "1",
            "--episodes_per_epoch", str(batch_size * (updates + 1)), "--stop_after_updates", str(updates),
            "--stop_teacher_forcing_epoch", "1" if teacher_forcing else "0", "--validation_every_epochs", "0",
            "--report_to", "none", "--logging_steps", "1", "--checkpoint_every_epochs", "1000",
        ]  # fmt: skip
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode:
            raise SystemExit(f"error: {' '.join(command)} failed:\n{result.stderr[-3000:]}")
        log = [json.loads(line) for line in (Path(folder) / "trainer_log.jsonl").read_text().splitlines()]
    log = [entry for entry in log if "train/frames_per_second" in entry]
    if any(entry["train/teacher_forcing_ratio"] != float(teacher_forcing) for entry in log):
        raise SystemExit(f"error: the run did not keep teacher forcing {'on' if teacher_forcing else 'off'}")
    frames = [b["train/frames"] - a["train/frames"] for a, b in zip(log, log[1:], strict=False)]
    seconds = [f / entry["train/frames_per_second"] for f, entry in zip(frames, log[1:], strict=True)]
    return sum(frames[warmup - 1 :]) / sum(seconds[warmup - 1 :])


def settings_mode(options: argparse.Namespace) -> None:
    trees = {"this tree": REPO_ROOT}
    scratch = tempfile.TemporaryDirectory()
    if options.baseline:
        baseline = Path(scratch.name) / "baseline"
        subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", str(baseline), options.baseline],
                       check=True, capture_output=True)  # fmt: skip
        trees = {f"baseline {options.baseline}": baseline, **trees}
    per_cycle, vector = fp32_flops_per_cycle()
    ghz = clock_ghz()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores at {ghz:.2f} GHz, peak FP32 "
          f"{per_cycle} FLOP/cycle/core ({vector}) = {per_cycle * ghz:.0f} GFLOP/s per core; torch {torch.__version__}; "
          f"{options.updates} updates of {options.batch_size} episodes, the first {options.warmup} not timed")  # fmt: skip
    print("| code | agent | setting | frames/s | MFLOP/frame | share of the cores' peak | vs the first row of its agent |")
    print("|---|---|---|---|---|---|---|")
    try:
        for agent in (AGENT_NAMES[name] for name in options.agents.split(",")):
            variant, teacher_forcing = AGENTS[agent]
            first = None
            for code, tree in trees.items():
                flops = flops_per_frame(tree, options.dataset, variant, teacher_forcing, options.batch_size)
                for setting, (processes, threads) in SETTINGS.items():
                    speed = launched_run(tree, options.dataset, (processes, threads), variant, teacher_forcing,
                                         options.batch_size, options.updates, options.warmup)  # fmt: skip
                    first = first or speed
                    share = speed * flops / (per_cycle * ghz * 1e9 * processes * threads)
                    print(f"| {code} | {agent} | {setting} | {speed:.0f} | {flops / 1e6:.1f} | {share:.0%} | "
                          f"{speed / first:.2f} |", flush=True)  # fmt: skip
    finally:
        if options.baseline:
            subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force", str(baseline)], check=False)
        scratch.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("pipeline", "settings"), default="pipeline")
    parser.add_argument("--baseline", default=None, help="--mode settings: also run the code of this git ref")
    parser.add_argument("--agents", default="tc,tc-free,bc", help="--mode settings: of tc, tc-free, bc")
    parser.add_argument("--dataset", default="outputs/quickstart/minibosslevel-thoughts")
    parser.add_argument("--sizes", default="quickstart,paper")
    parser.add_argument("--variants", default="thought-cloning,behavioral-cloning")
    parser.add_argument("--batch-size", type=int, default=64, help="episodes per update (quickstart size)")
    parser.add_argument("--paper-batch-size", type=int, default=8, help="episodes per update (paper size, CPU)")
    parser.add_argument("--updates", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    options = parser.parse_args()
    if options.mode == "settings":
        settings_mode(options)
        return
    if options.threads:
        torch.set_num_threads(options.threads)
    run = trainer()
    print(f"torch threads {torch.get_num_threads()}, {options.updates} updates ({options.warmup} untimed)")
    print("| size | variant | episodes/update | end to end (frames/s) | model alone (frames/s) | ratio |")
    print("|---|---|---|---|---|---|")
    for size in options.sizes.split(","):
        batch_size = options.paper_batch_size if size == "paper" else options.batch_size
        for variant in options.variants.split(","):
            alone = model_alone(run, options.dataset, size, variant, batch_size, options.updates, options.warmup)
            whole = end_to_end(run, options.dataset, size, variant, batch_size, options.updates, options.warmup)
            print(f"| {size} | {variant} | {batch_size} | {whole:.0f} | {alone:.0f} | {whole / alone:.2f} |", flush=True)


if __name__ == "__main__":
    main()
