#!/usr/bin/env bash
# Recipe search of issue 11 (docs/RESULTS.md): one-change-at-a-time trials on the validation split.
#
#   scripts/recipe_search.sh run      # train the queued TRIALS, one process with one torch thread each
#   scripts/recipe_search.sh report   # the table of every trial (docs/results/recipe-search/summary.md)
#
# Every trial is train/configs/recipe_search.yaml plus the flags listed for it below; only the validation
# split is ever rolled out. Resumable: a trial whose model/ exists is skipped, one with checkpoints resumes.
# Settings (environment): DATA (the study's dataset), RECIPE (outputs/recipe), TRIALS (queue, in order),
# NICE (10), THREADS (1).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python
CONFIG=train/configs/recipe_search.yaml
RECIPE="${RECIPE:-outputs/recipe}"
DATA="${DATA:-outputs/study/minibosslevel-thoughts}"
NICE="${NICE:-10}"
THREADS="${THREADS:-1}"
TRIALS="${TRIALS:-tc-base bc-base tc-tf-short bc-lr2e-3 tc-lr2e-3 bc-bs32 tc-tlw1 bc-mem256 tc-mem256 tc-bs32 tc-tf-sample
    tc-tlw4 bc-bs16 tc-bs16 bc-bs32-lr5e-4 tc-bs32-lr5e-4}"

flags_of() {  # the one change each trial makes
    case "$1" in
        tc-base) echo "--variant thought-cloning" ;;
        tc-tf-short) echo "--variant thought-cloning --stop_teacher_forcing_epoch 1" ;;
        tc-tf-sample) echo "--variant thought-cloning --teacher_forcing_mode sample" ;;
        tc-lr2e-3) echo "--variant thought-cloning --learning_rate 0.002" ;;
        tc-tlw1) echo "--variant thought-cloning --thought_loss_weight 1" ;;
        tc-tlw4) echo "--variant thought-cloning --thought_loss_weight 4" ;;
        tc-bs32) echo "--variant thought-cloning --batch_size 32" ;;
        tc-mem256) echo "--variant thought-cloning --memory_dim 256" ;;
        tc-bs16) echo "--variant thought-cloning --batch_size 16" ;;
        tc-bs32-lr5e-4) echo "--variant thought-cloning --batch_size 32 --learning_rate 0.0005" ;;
        bc-base) echo "--variant behavioral-cloning" ;;
        bc-bs16) echo "--variant behavioral-cloning --batch_size 16" ;;
        bc-bs32-lr5e-4) echo "--variant behavioral-cloning --batch_size 32 --learning_rate 0.0005" ;;
        bc-lr2e-3) echo "--variant behavioral-cloning --learning_rate 0.002" ;;
        bc-bs32) echo "--variant behavioral-cloning --batch_size 32" ;;
        bc-mem256) echo "--variant behavioral-cloning --memory_dim 256" ;;
        *) echo "error: unknown trial $1 (see flags_of in $0)" >&2; exit 2 ;;
    esac
}

run() {
    for trial in $TRIALS; do
        out="$RECIPE/$trial"
        flags="$(flags_of "$trial")"
        [ -d "$out/model" ] && { echo "$trial: done"; continue; }
        resume=""
        [ -d "$out/checkpoints" ] && resume="--resume"
        echo "$(date -u +%FT%TZ) $trial: $flags $resume"
        # shellcheck disable=SC2086
        OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS nice -n "$NICE" $PY train/run.py --config "$CONFIG" \
            --dataset "$DATA" --output_dir "$out" $flags $resume > "$out.log" 2>&1 \
            || { echo "$trial failed, see $out.log" >&2; exit 1; }
    done
}

report() {
    local pairs=()
    for trial in $TRIALS; do pairs+=("$trial=$(flags_of "$trial")"); done
    $PY - "$RECIPE" "${pairs[@]}" <<'PY'
import json, sys
from pathlib import Path

recipe, pairs = Path(sys.argv[1]), [pair.split("=", 1) for pair in sys.argv[2:]]
rows = ["| trial | flags on top of recipe_search.yaml | validation success (256 seeds) at frames | best | "
        "median frames/s (1 thread, shared machine) | finished |", "|---|---|---|---|---|---|"]
for trial, flags in pairs:
    log = recipe / trial / "trainer_log.jsonl"
    if not log.exists():
        continue
    records = [json.loads(line) for line in log.read_text().splitlines()]
    validations = [r for r in records if "validation/success_rate" in r]
    speeds = sorted(r["train/frames_per_second"] for r in records if "train/frames_per_second" in r)
    curve = ", ".join(f"{r['train/frames'] / 1e6:.2f}M: {r['validation/success_rate']:.3f}" for r in validations)
    best = max((r["validation/success_rate"] for r in validations), default=float("nan"))
    speed = speeds[len(speeds) // 2] if speeds else float("nan")
    finished = "yes" if (recipe / trial / "model").is_dir() else "no (running or stopped)"
    rows.append(f"| {trial} | `{flags}` | {curve} | {best:.3f} | {speed:.0f} | {finished} |")
print("\n".join(rows))
PY
}

case "${1:-}" in
    run) mkdir -p "$RECIPE"; run ;;
    report) report ;;
    *) echo "usage: $0 run|report" >&2; exit 2 ;;
esac
