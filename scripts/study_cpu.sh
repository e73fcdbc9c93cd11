#!/usr/bin/env bash
# The CPU-scale Thought Cloning study of issue 6 (docs/RESULTS.md), resumable, on a 2-core machine.
#
#   scripts/study_cpu.sh data      # the study's dataset: 20,000 MiniBossLevel seeds, train/validation/test
#   scripts/study_cpu.sh run       # train + evaluate the queued runs (RUNS), WORKERS at a time
#   scripts/study_cpu.sh report    # tables (outputs/study/summary.md, .json) and plots (docs/results/)
#   scripts/study_cpu.sh probe     # frames/s of every agent, teacher forcing on and off (5 updates each)
#   scripts/study_cpu.sh package   # best TC run -> outputs/study/thought-cloning-babyai (card ready to push);
#                                  # the dataset card re-rendered for its Hub id
#   scripts/study_cpu.sh all       # data, run, report, package
#
# Agents (one --variant each, everything else from train/configs/study_cpu.yaml, so every agent trains on
# the same episodes in the same order for the same frames): tc thought-cloning, bc behavioral-cloning,
# nts no-thought-supervision, te text-encoder (MiniLM upper level).
#
# Resumable: a run whose model/ folder exists is not trained again; a run with checkpoints continues with
# --resume; an evaluation whose evaluation.json exists is skipped. Kill it any time and start it again.
#
# Scheduling: RUNS is a queue of AGENT-SEED items in order of importance; WORKERS processes (one torch thread
# each) take the next unclaimed item, train it, then evaluate it. No new item is started after DEADLINE
# (a `date` string; unset: none), so a time-boxed session ends with finished, evaluated runs.
#
# Settings (environment): CONFIG (train/configs/study_cpu.yaml; study_5m.yaml for the 5M-frame comparison), DATA, STUDY, RUNS, WORKERS (2), THREADS (1), ID_EPISODES (200), OOD_EPISODES
# (10 per bin; also the episodes of the thought suites), STEERING_EPISODES (100; TC agents), NUM_ENVS (50),
# DEADLINE, HUB_ORG (hf-thought-cloning).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python
CONFIG="${CONFIG:-train/configs/study_cpu.yaml}"
STUDY="${STUDY:-outputs/study}"
DATA="${DATA:-$STUDY/minibosslevel-thoughts}"
RUNS="${RUNS:-tc-0 bc-0 tc-1 bc-1 nts-0 te-0 tc-2 bc-2 nts-1 te-1}"
WORKERS="${WORKERS:-2}"
THREADS="${THREADS:-1}"
ID_EPISODES="${ID_EPISODES:-200}"
OOD_EPISODES="${OOD_EPISODES:-10}"
STEERING_EPISODES="${STEERING_EPISODES:-100}"
NUM_ENVS="${NUM_ENVS:-50}"
HUB_ORG="${HUB_ORG:-hf-thought-cloning}"  # namespace of the packaged model and dataset ids
export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"
declare -A VARIANT=([tc]=thought-cloning [bc]=behavioral-cloning [nts]=no-thought-supervision [te]=text-encoder)

say() { echo "[study $(date -u +%H:%M:%S)] $*"; }

data() {
  if [ -f "$DATA/generation/statistics.json" ]; then say "data $DATA exists, kept"; return; fi
  "$PY" -m dataset_builder generate --level BabyAI-MiniBossLevel-v0 --episodes 20000 \
    --splits train=19000,validation=500,test=500 --noise-rate 0.01 --num-proc 2 --output "$DATA" --overwrite
  "$PY" -m dataset_builder validate "$DATA"
}

train() {  # train AGENT SEED
  local agent=$1 seed=$2 dir="$STUDY/$1-seed$2" mode=()
  if [ -d "$dir/model" ]; then say "$agent seed $seed: trained already"; return; fi
  if compgen -G "$dir/checkpoints/checkpoint-*[0-9]" >/dev/null; then mode+=(--resume)
  elif [ -d "$dir" ]; then mode+=(--overwrite)  # started but no checkpoint yet: nothing to keep
  fi
  say "train $agent seed $seed ${mode[*]:-}"
  "$PY" train/run.py --config "$CONFIG" --dataset "$DATA" --variant "${VARIANT[$agent]}" --seed "$seed" \
    --output_dir "$dir" --report_to none "${mode[@]}" || return 1
  say "trained $agent seed $seed"
}

evaluate() {  # evaluate RUN NAME ARGS...
  local run=$1 name=$2; shift 2
  local out="$STUDY/$run/$name"
  if [ -f "$out/evaluation.json" ]; then say "$run $name: evaluated already"; return; fi
  say "evaluate $run -> $name: $*"
  "$PY" -m hf_thought_cloning.evaluate --model "$STUDY/$run/model" --dataset "$DATA" \
    --num-envs "$NUM_ENVS" --output "$out" --no-replay "$@" || return 1
  say "evaluated $run $name"
}

train_and_evaluate() {  # train_and_evaluate AGENT SEED
  local agent=$1 seed=$2 run="$1-seed$2"
  # errexit does not apply inside a function whose caller tests its status: every step checks its own.
  train "$agent" "$seed" || return 1
  evaluate "$run" eval-id --suite in-distribution --episodes "$ID_EPISODES" || return 1
  case $agent in
    # TC agents: `all` plays the OOD suites (the same environments as BC's `ood`: an episode is a function of
    # model, level, seed and action seed) and also reports FADS, precrime and steering.
    tc|te) evaluate "$run" eval-ood --suite all --episodes "$OOD_EPISODES" || return 1
           # Steering again on more seeds: does the lower level follow the demonstrator's thoughts?
           evaluate "$run" eval-steering --suite steering --episodes "$STEERING_EPISODES" || return 1 ;;
    # BC has no thoughts; the ablation's thoughts are never supervised, so only its actions are compared.
    *) evaluate "$run" eval-ood --suite ood --episodes "$OOD_EPISODES" || return 1 ;;
  esac
}

worker() {  # worker N: take queued runs until none is left (or DEADLINE has passed); a failed run is reported
  local item failed=0
  for item in $RUNS; do
    if [ -n "${DEADLINE:-}" ] && [ "$(date +%s)" -ge "$(date -d "$DEADLINE" +%s)" ]; then
      say "worker $1: deadline $DEADLINE passed, no new run"; return $failed
    fi
    mkdir "$STUDY/claims/$item" 2>/dev/null || continue  # another worker has it
    local agent=${item%-*} seed=${item##*-}
    [ -n "${VARIANT[$agent]:-}" ] || { say "unknown agent in RUNS: $item (use tc, bc, nts or te)"; return 2; }
    say "worker $1: $item"
    train_and_evaluate "$agent" "$seed" >"$STUDY/logs/$agent-seed$seed.log" 2>&1 \
      || { say "worker $1: $item FAILED, see $STUDY/logs/$agent-seed$seed.log"; failed=1; }
  done
  return $failed
}

run_all() {
  [ -d "$DATA" ] || { echo "error: no dataset at $DATA; run '$0 data' first" >&2; exit 2; }
  mkdir -p "$STUDY/logs"; rm -rf "$STUDY/claims"; mkdir -p "$STUDY/claims"
  say "data $DATA; runs $RUNS; $WORKERS workers x $THREADS thread(s); eval $ID_EPISODES id / $OOD_EPISODES ood per bin"
  local pids=() status=0
  for n in $(seq 1 "$WORKERS"); do worker "$n" & pids+=($!); done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  say "workers finished (status $status); logs in $STUDY/logs"
  return $status
}

probe() {  # frames/s of every agent, teacher forcing on and off, two processes at a time (as in `run`)
  mkdir -p "$STUDY/probe"
  one() {
    local name=$1; shift
    "$PY" train/run.py --config "$CONFIG" --dataset "$DATA" --output_dir "$STUDY/probe/$name" --report_to none \
      --stop_after_updates 5 --logging_steps 1 --validation_every_epochs 0 --overwrite "$@" \
      >"$STUDY/probe/$name.log" 2>&1 || say "probe $name failed (see $STUDY/probe/$name.log)"
  }
  local off=(--epochs 1 --stop_teacher_forcing_epoch 0)  # teacher-forcing ratio 0 from the first batch
  one tc-on --variant thought-cloning & one bc --variant behavioral-cloning & wait
  one tc-off --variant thought-cloning "${off[@]}" & one nts --variant no-thought-supervision & wait
  one te-on --variant text-encoder & one te-off --variant text-encoder "${off[@]}" & wait
}

package() {  # the TC run with the best validation success, as a Hub-ready model folder (card + model-index)
  local best
  best=$(for dir in "$STUDY"/tc-seed*/; do
    [ -f "$dir/model/training_summary.json" ] && [ -f "$dir/eval-id/evaluation.json" ] || continue
    "$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["metrics"]["best_validation_success"], sys.argv[2])' \
      "$dir/model/training_summary.json" "${dir%/}"
  done | sort -g -k1,1 | tail -1 | cut -d' ' -f2)
  [ -n "$best" ] || { echo "error: no trained and evaluated TC run in $STUDY: run '$0 run' first" >&2; exit 2; }
  say "packaging $best (best validation success of the TC runs) as $STUDY/thought-cloning-babyai"
  local evaluations=("$best/eval-id")  # most trusted first: a metric measured twice is taken from the first
  [ -d "$best/eval-steering" ] && evaluations+=("$best/eval-steering")
  evaluations+=("$best/eval-ood")
  "$PY" -m hf_thought_cloning.packaging --model "$best/model" --evaluation "${evaluations[@]}" \
    --repo_id "$HUB_ORG/thought-cloning-babyai" --dataset_hub_id "$HUB_ORG/babyai-thoughts-minibosslevel" \
    --output "$STUDY/thought-cloning-babyai" --overwrite
  "$PY" -m dataset_builder card "$DATA" --repo_id "$HUB_ORG/babyai-thoughts-minibosslevel"
}

report() {
  "$PY" -m hf_thought_cloning.evaluation.study_report --study "$STUDY" --plots docs/results
}

case "${1:-all}" in
  all) data; run_all; report; package ;;
  data) data ;;
  run) run_all ;;
  report) report ;;
  probe) probe ;;
  package) package ;;
  *) echo "usage: $0 [all|data|run|report|probe|package]" >&2; exit 2 ;;
esac
