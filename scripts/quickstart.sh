#!/usr/bin/env bash
# The main job on the embedded default (a local dataset folder, no Hub), on CPU:
#   1. generate a MiniBossLevel thought dataset (train/validation/test seeds disjoint) and validate it;
#   2. train Thought Cloning with train/configs/quickstart.yaml through `accelerate launch` (2 DDP processes);
#   3. evaluate success on held-out test seeds, update the model card, print one episode's thought trace.
# The loadable model folder is $OUT/tc-agent/model (AutoModel.from_pretrained).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT="${OUT:-outputs/quickstart}"
DATA="$OUT/minibosslevel-thoughts"
AGENT="$OUT/tc-agent"
START=$SECONDS

.venv/bin/python -m dataset_builder generate --level BabyAI-MiniBossLevel-v0 --episodes 2500 \
  --splits train=0.92,validation=0.04,test=0.04 --noise-rate 0.01 --num-proc 2 --output "$DATA" --overwrite
.venv/bin/python -m dataset_builder validate "$DATA"

# Two DDP processes (gloo) with one thread each: the fastest CPU setting measured (docs/PERFORMANCE.md), and
# bit-reproducible. accelerate's --cpu would run a single process; ACCELERATE_USE_CPU keeps --multi_gpu on CPU.
ACCELERATE_USE_CPU=1 .venv/bin/accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \
  --dynamo_backend no --num_cpu_threads_per_process 1 \
  train/run.py --config train/configs/quickstart.yaml --dataset "$DATA" --output_dir "$AGENT" --overwrite

.venv/bin/python -m hf_thought_cloning.evaluate --model "$AGENT/model" --suite in-distribution \
  --dataset "$DATA" --episodes 100 --output "$AGENT/evaluation" --update-card
.venv/bin/python - "$AGENT/evaluation/evaluation.json" <<'PY'
import json, sys
suite = json.load(open(sys.argv[1]))["suites"]["in-distribution"]
print(f"held-out success rate: {suite['success_rate']:.3f} over {suite['episodes']} test episodes "
      f"(mean length {suite['mean_length']:.1f} steps)")
PY
echo "model folder: $AGENT/model   replay: $AGENT/evaluation/replay.gif   total time: $((SECONDS - START)) s"
