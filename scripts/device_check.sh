#!/usr/bin/env bash
# Issue 11's GPU check, one prepared script for a session that is lent the device tool's GPU machine (15 minutes
# of device time in all: keep this under 8). Here, first: ./scripts/device_wheels.sh; then
#   run(command="scripts/device_check.sh", carry=[".whl"], timeout_s=540)
# It (1) installs the carried wheels over the image's torch, (2) generates the CPU study's MiniBossLevel data
# (same seeds and splits as scripts/study_cpu.sh), (3) measures the trainer's frames/s at the paper's size in
# bf16, teacher forcing on and off (train/configs/gpu_minibosslevel.yaml, THROUGHPUT_UPDATES updates each),
# (4) trains that model for about TRAIN_SECONDS, sizing its 10 epochs from (3), and (5) evaluates it on the 500
# test seeds, sampled actions. What comes back under $OUT: env.txt, throughput_tf_on.jsonl,
# throughput_tf_off.jsonl, trainer_log.jsonl, training_summary.json, evaluation.json, device_check.log.
# TINY=1 runs the same steps on the CPU with a tiny model and budget (how it is checked without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-outputs/device-check/out}"
WORK="${WORK:-outputs/device-check}"
PY="${PYTHON:-python3}"
TINY="${TINY:-0}"
TRAIN_SECONDS="${TRAIN_SECONDS:-200}"
THROUGHPUT_UPDATES="${THROUGHPUT_UPDATES:-20}"
WHEELS="${WHEELS:-.whl}"  # the carried wheels (WHEELS=none: use the Python environment as it is)
mkdir -p "$OUT" "$WORK"
exec > >(tee "$OUT/device_check.log") 2>&1
say() { echo "[device-check $(date -u +%H:%M:%S)] $*"; }
export TQDM_MININTERVAL=15 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
{ date -u; nvidia-smi 2>/dev/null || echo "no nvidia-smi"; nproc
  "$PY" -c "import torch, transformers, datasets, minigrid, accelerate; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else ''); import pyarrow; print('transformers', transformers.__version__, 'datasets', datasets.__version__, 'pyarrow', pyarrow.__version__, 'minigrid', minigrid.__version__, 'accelerate', accelerate.__version__)"
} > "$OUT/env.txt"
cat "$OUT/env.txt"

data="$WORK/minibosslevel-thoughts"
common=(--config train/configs/gpu_minibosslevel.yaml --dataset "$data" --report_to none --logging_steps 5)
if [ "$TINY" = 1 ]; then
  episodes=(--episodes 240 --splits train=200,validation=20,test=20)
  common+=(--cpu --image_dim 16 --text_dim 32 --memory_dim 48 --num_attention_heads 2 --batch_size 8
           --mixed_precision no --validation_episodes 8 --validation_num_envs 8 --logging_steps 1)
  eval_episodes=20 batch=8
else
  episodes=(--episodes 20000 --splits train=19000,validation=500,test=500)
  eval_episodes=500 batch=180
fi
if [ ! -f "$data/generation/statistics.json" ]; then
  say "generating $data"
  "$PY" -m dataset_builder generate --level BabyAI-MiniBossLevel-v0 "${episodes[@]}" --noise-rate 0.01 \
    --num-proc "$(nproc)" --output "$data" --overwrite
fi

# Teacher forcing on (the first half of the run) and off (the decoder writes every step's thought: slower).
for forcing in on off; do
  say "throughput, teacher forcing $forcing: $THROUGHPUT_UPDATES updates at the paper's size"
  stop=$([ "$forcing" = on ] && echo 1 || echo 0)
  "$PY" train/run.py "${common[@]}" --output_dir "$WORK/throughput-$forcing" --overwrite --validation_every_epochs 0 \
    --epochs 1 --stop_teacher_forcing_epoch "$stop" --stop_after_updates "$THROUGHPUT_UPDATES"
  cp "$WORK/throughput-$forcing/trainer_log.jsonl" "$OUT/throughput_tf_$forcing.jsonl"
done
# Frames/s after the first logging interval (start-up, allocator warm-up), and the epoch size that fits the budget:
# over the run's 10 epochs, 3/4 of the batches are teacher-forced (5 epochs at 1, then a linear decay to 0).
sizes=$("$PY" - "$OUT" "$TRAIN_SECONDS" "$batch" <<'PY'
import json, sys
def fps(name):
    log = [json.loads(line) for line in open(f"{sys.argv[1]}/{name}")]
    rows = [row for row in log if "train/frames_per_second" in row]
    rows = rows[1:] or rows
    return sum(row["train/frames_per_second"] for row in rows) / len(rows)
on, off = fps("throughput_tf_on.jsonl"), fps("throughput_tf_off.jsonl")
seconds_per_frame = 0.75 / on + 0.25 / off
# An episode averages 26.5 frames in this data; 10 epochs; at least one batch per epoch.
print(round(on), round(off), max(int(sys.argv[3]), int(float(sys.argv[2]) / seconds_per_frame / 26.5 / 10)))
PY
)  # a plain substitution, so that set -e stops the script if this fails
read -r fps_on fps_off episodes_per_epoch <<< "$sizes"
say "throughput $fps_on / $fps_off frames/s (teacher forcing on / off); training 10 epochs of $episodes_per_epoch episodes"

"$PY" train/run.py "${common[@]}" --output_dir "$WORK/tc-paper-size" --overwrite --episodes_per_epoch "$episodes_per_epoch"
cp "$WORK/tc-paper-size/trainer_log.jsonl" "$OUT/trainer_log.jsonl"
cp "$WORK/tc-paper-size/model/training_summary.json" "$OUT/training_summary.json"

say "evaluating on $eval_episodes test seeds"
"$PY" -m hf_thought_cloning.evaluate --model "$WORK/tc-paper-size/model" --output "$WORK/evaluation" \
  --suite in-distribution --episodes "$eval_episodes" --dataset "$data" --num_envs 250 --no_replay --overwrite
cp "$WORK/evaluation/evaluation.json" "$OUT/evaluation.json"
say "done"
