#!/usr/bin/env bash
# The main job on the embedded default: set up .venv, generate a small MiniBossLevel thought dataset into
# a local folder (no Hub), validate it, and print one episode's thought trace.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
OUT="${OUT:-outputs/quickstart}"
DATA="$OUT/minibosslevel-thoughts"
.venv/bin/python -m dataset_builder generate --level BabyAI-MiniBossLevel-v0 --episodes 1000 \
  --splits train=0.9,validation=0.05,test=0.05 --noise-rate 0.01 --num-proc 2 --output "$DATA" --overwrite
.venv/bin/python -m dataset_builder validate "$DATA"
.venv/bin/python -m dataset_builder show "$DATA" --level BabyAI-MiniBossLevel-v0 --split test --index 0
