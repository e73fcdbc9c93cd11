"""Is the training pipeline the bottleneck? End-to-end frames/s of train/run.py against the model alone.

For each (model size, variant), in one process:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="outputs/quickstart/minibosslevel-thoughts")
    parser.add_argument("--sizes", default="quickstart,paper")
    parser.add_argument("--variants", default="thought-cloning,behavioral-cloning")
    parser.add_argument("--batch-size", type=int, default=64, help="episodes per update (quickstart size)")
    parser.add_argument("--paper-batch-size", type=int, default=8, help="episodes per update (paper size, CPU)")
    parser.add_argument("--updates", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    options = parser.parse_args()
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
