#!/usr/bin/env bash
# A small, reproducible Thought Cloning vs Behavioural Cloning study on a 2-core CPU (issue 6, CPU scale).
#
#   scripts/study_cpu.sh            # train + evaluate every (agent, seed), then `report`
#   scripts/study_cpu.sh run        # same, without the report
#   scripts/study_cpu.sh report     # tables (outputs/study/summary.md, .json) and plots (docs/results/)
#   scripts/study_cpu.sh probe      # frames/s of the agents not studied (3 updates each)
#   scripts/study_cpu.sh train AGENT VARIANT SEED   # one training run;  scripts/study_cpu.sh evaluate
#
# Data: the quickstart dataset (scripts/quickstart.sh), MiniBossLevel, train/validation/test on disjoint
# seeds. Model and schedule: train/configs/quickstart.yaml for every agent; only the output folder, the
# seed and the variant differ, plus EPOCHS (the same for every agent, so every agent sees the same frames).
#
# Resumable: a run whose model/ folder exists is skipped; a run with checkpoints continues with --resume;
# an evaluation whose evaluation.json exists is skipped. Kill it any time and start it again.
#
# Parallelism: every training run at once, one process with THREADS torch threads each (2 agents x 2 seeds
# = 4 single-thread processes on 2 cores), then one evaluation lane per seed.
#
# Settings (environment): DATA, STUDY, SEEDS ("0 1"), EPOCHS (8), THREADS (1), ID_EPISODES (100),
# OOD_EPISODES (20, per bin; also the episodes of the thought suites of the TC runs), NUM_ENVS (50),
# STOP_AFTER_UPDATES (unset: train to the end; else stop every run at that update, after its checkpoint,
# and evaluate its best/ folder, the best validated weights so far; a later run without it resumes to the end).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python
CONFIG=train/configs/quickstart.yaml
DATA="${DATA:-outputs/quickstart/minibosslevel-thoughts}"
STUDY="${STUDY:-outputs/study}"
SEEDS="${SEEDS:-0 1}"
EPOCHS="${EPOCHS:-8}"
THREADS="${THREADS:-1}"
ID_EPISODES="${ID_EPISODES:-100}"
OOD_EPISODES="${OOD_EPISODES:-20}"
NUM_ENVS="${NUM_ENVS:-50}"
export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"

# quickstart.yaml is written for 8 epochs (teacher forcing kept on for all 8, learning rate halved at 6,
# validation every 2). With fewer epochs: teacher forcing still on throughout, halving at 3/4 of the run,
# validation every 2 epochs from 6 epochs up, else every epoch (every curve keeps 3-4 points).
if [ "$EPOCHS" -ge 6 ]; then VALIDATE_EVERY=2; else VALIDATE_EVERY=1; fi
HALVING=$(( EPOCHS * 3 / 4 )); [ "$HALVING" -ge 1 ] || HALVING=1
SCHEDULE=(--epochs "$EPOCHS" --stop_teacher_forcing_epoch "$EPOCHS" --lr_halving_epochs "$HALVING"
          --validation_every_epochs "$VALIDATE_EVERY" --checkpoint_every_epochs 1)

say() { echo "[study $(date -u +%H:%M:%S)] $*"; }

train() {  # train AGENT VARIANT SEED
  local agent=$1 variant=$2 seed=$3 dir="$STUDY/$1-seed$3" mode=()
  if [ -d "$dir/model" ]; then say "$agent seed $seed: model exists, skipped"; return; fi
  if [ -n "${STOP_AFTER_UPDATES:-}" ] && [ -d "$dir/checkpoints/$(printf 'checkpoint-%08d' "$STOP_AFTER_UPDATES")" ]; then
    say "$agent seed $seed: stopped at update $STOP_AFTER_UPDATES already, skipped"; return
  fi
  if [ -n "${STOP_AFTER_UPDATES:-}" ]; then mode+=(--stop_after_updates "$STOP_AFTER_UPDATES"); fi
  if compgen -G "$dir/checkpoints/checkpoint-*[0-9]" >/dev/null; then mode+=(--resume)
  elif [ -d "$dir" ]; then mode+=(--overwrite)  # started but no checkpoint yet: nothing to keep
  fi
  say "train $agent seed $seed ${mode[*]:-}"
  "$PY" train/run.py --config "$CONFIG" --dataset "$DATA" --variant "$variant" --seed "$seed" \
    --output_dir "$dir" --report_to none "${SCHEDULE[@]}" "${mode[@]}"
  say "trained $agent seed $seed"
}

evaluate() {  # evaluate RUN NAME ARGS...
  local run=$1 name=$2; shift 2
  local out="$STUDY/$run/$name" model="$STUDY/$run/model"
  if [ -f "$out/evaluation.json" ]; then say "$run $name: done, skipped"; return; fi
  [ -d "$model" ] || model="$STUDY/$run/best"  # stopped early (STOP_AFTER_UPDATES): best validated weights
  say "evaluate $model -> $name: $*"
  "$PY" -m hf_thought_cloning.evaluate --model "$model" --dataset "$DATA" \
    --num-envs "$NUM_ENVS" --output "$out" --no-replay "$@"
  say "evaluated $run $name"
}

evaluate_lane() {  # evaluate_lane SEED: every evaluation of one seed, in order of importance
  local seed=$1
  evaluate "tc-seed$seed" eval-id --suite in-distribution --episodes "$ID_EPISODES"
  evaluate "bc-seed$seed" eval-id --suite in-distribution --episodes "$ID_EPISODES"
  evaluate "bc-seed$seed" eval-ood --suite ood --episodes "$OOD_EPISODES"
  # TC: `all` plays the same OOD environments as BC's `ood` (episodes are functions of model, level, seed
  # and action seed) once, and reports FADS (in and out of distribution), precrime and steering with them.
  evaluate "tc-seed$seed" eval-ood --suite all --episodes "$OOD_EPISODES"
}

run_all() {
  # Phase 1: every training run at once, one single-thread process each (4 processes on 2 cores: when
  # other jobs share the machine, this keeps the study's share of it). Phase 2: one evaluation lane per seed.
  mkdir -p "$STUDY/logs"
  say "data $DATA, seeds $SEEDS, epochs $EPOCHS, $THREADS thread(s) per process, eval $ID_EPISODES id / $OOD_EPISODES ood per bin"
  local pids=() status=0
  for seed in $SEEDS; do
    train tc thought-cloning "$seed" >"$STUDY/logs/train-tc-seed$seed.log" 2>&1 & pids+=($!)
    train bc behavioral-cloning "$seed" >"$STUDY/logs/train-bc-seed$seed.log" 2>&1 & pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  say "training finished (status $status)"
  pids=()
  for seed in $SEEDS; do
    evaluate_lane "$seed" >"$STUDY/logs/eval-seed$seed.log" 2>&1 & pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  say "evaluations finished (status $status); logs in $STUDY/logs"
  return $status
}

probe() {  # frames/s of the agents this study does not train (3 updates each, one at a time)
  mkdir -p "$STUDY/probe"
  for variant in ${PROBE_VARIANTS:-no-thought-supervision text-encoder}; do
    local dir="$STUDY/probe/$variant"
    if [ -f "$dir/trainer_log.jsonl" ] && grep -q frames_per_second "$dir/trainer_log.jsonl"; then continue; fi
    say "probe $variant"
    "$PY" train/run.py --config "$CONFIG" --dataset "$DATA" --variant "$variant" --seed 0 \
      --output_dir "$dir" --report_to none "${SCHEDULE[@]}" --stop_after_updates 3 --logging_steps 1 \
      --validation_every_epochs 0 --overwrite >"$STUDY/probe/$variant.log" 2>&1 \
      || say "probe $variant failed (see $STUDY/probe/$variant.log)"
  done
}

report() {
  mkdir -p docs/results
  STUDY="$STUDY" DATA="$DATA" "$PY" - <<'PY'
import json, os, statistics
from pathlib import Path

from hf_thought_cloning.evaluation.replays import plot_learning_curves, plot_success_by_bin

study, data = Path(os.environ["STUDY"]), Path(os.environ["DATA"])
runs = sorted(p for p in study.glob("*-seed*") if (p / "trainer_log.jsonl").exists())
agents = {"tc": "Thought Cloning", "bc": "Behavioural Cloning"}


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None, 0
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0), len(values)


def fmt(values, scale=100.0):
    m, s, n = mean_std(values)
    return "n/a" if m is None else f"{scale * m:.1f} ± {scale * s:.1f} (n={n})"


def load(path):
    return json.loads(path.read_text()) if path.exists() else None


summary = {"runs": {}}
lines = []
for run in runs:
    log = [json.loads(line) for line in (run / "trainer_log.jsonl").read_text().splitlines() if line.strip()]
    validation = [(e["train/frames"], e["validation/success_rate"], e["train/epoch"]) for e in log
                  if "validation/success_rate" in e]
    fps = [e["train/frames_per_second"] for e in log if "train/frames_per_second" in e]
    record = {
        "validation": validation,
        "median_frames_per_second": statistics.median(fps) if fps else None,
        "frames": max((e.get("train/frames", 0) for e in log), default=0),
        "finished": (run / "model").is_dir(),
    }
    eid, eood = load(run / "eval-id" / "evaluation.json"), load(run / "eval-ood" / "evaluation.json")
    if eid:
        record["id"] = eid["suites"]["in-distribution"]
        record["versions"] = eid.get("versions")
    if eood:
        record["ood"] = eood["suites"].get("ood")
        for key in ("fads", "precrime", "steering"):
            if key in eood["suites"]:
                record[key] = eood["suites"][key]
    for key in ("precrime", "steering"):  # separate calls (--suite precrime / steering), if made
        extra = load(run / f"eval-{key}" / "evaluation.json")
        if key not in record and extra and key in extra["suites"]:
            record[key] = extra["suites"][key]
    summary["runs"][run.name] = record


def runs_of(agent):
    return [(name, r) for name, r in summary["runs"].items() if name.startswith(agent + "-")]


# --- in-distribution
lines += ["### In-distribution success (held-out test seeds of the dataset)", "",
          "| agent | " + " | ".join(f"seed {k}" for k in range(3)) + " | mean ± std |", "|---|---|---|---|---|"]
for agent, label in agents.items():
    per_seed = {name.split("seed")[-1]: r.get("id", {}).get("success_rate") for name, r in runs_of(agent)}
    cells = [("n/a" if per_seed.get(str(k)) is None else f"{100 * per_seed[str(k)]:.1f}") for k in range(3)]
    lines.append(f"| {label} | " + " | ".join(cells) + f" | {fmt(per_seed.values())} |")
lines.append("")

# --- validation curves
curves, table = {}, {}
for agent, label in agents.items():
    by_epoch = {}
    for _, r in runs_of(agent):
        for frames, success, epoch in r["validation"]:
            by_epoch.setdefault(epoch, []).append((frames, success))
    points = []
    for epoch in sorted(by_epoch):
        frames = statistics.mean(f for f, _ in by_epoch[epoch])
        m, s, n = mean_std([v for _, v in by_epoch[epoch]])
        points.append((frames, m, s))
        table.setdefault(epoch, {})[label] = (frames, m, s, n)
    if points:
        curves[label] = points
if curves:
    plot_learning_curves(curves, Path("docs/results/learning_curves.png"),
                         title="MiniBossLevel validation success (mean ± std over seeds)")
lines += ["### Validation success during training (64 validation-split episodes per point)", "",
          "| epoch | frames | " + " | ".join(agents.values()) + " |", "|---|---|---|---|"]
for epoch in sorted(table):
    frames = next(iter(table[epoch].values()))[0]
    cells = []
    for label in agents.values():
        value = table[epoch].get(label)
        cells.append("n/a" if value is None else f"{100 * value[1]:.1f} ± {100 * value[2]:.1f} (n={value[3]})")
    lines.append(f"| {epoch:g} | {frames:,.0f} | " + " | ".join(cells) + " |")
lines.append("")

# --- OOD per bin
rows, ood_table = [], {}
for agent, label in agents.items():
    for name, r in runs_of(agent):
        for suite, content in (r.get("ood") or {}).items():
            for bin_name, b in content["bins"].items():
                ood_table.setdefault((suite, bin_name), {}).setdefault(label, []).append(
                    (b["success_rate"], b["episodes"]))
if ood_table:
    lines += ["### Zero-shot out of distribution (success %, mean ± std over seeds; episodes per run per bin)", "",
              "| suite | bin | " + " | ".join(agents.values()) + " | TC - BC |", "|---|---|---|---|---|"]
    for (suite, bin_name), per_agent in ood_table.items():
        cells, means = [], []
        for agent, label in agents.items():
            values = per_agent.get(label, [])
            m, s, n = mean_std([v for v, _ in values])
            means.append(m)
            episodes = values[0][1] if values else 0
            cells.append("n/a" if m is None else f"{100 * m:.1f} ± {100 * s:.1f} ({episodes}x{n})")
            if m is not None:
                rows.append({"suite": f"{suite} ({agent.upper()})", "bin": bin_name, "success_rate": m,
                             "episodes": int(episodes * n)})
        diff = "n/a" if None in means else f"{100 * (means[0] - means[1]):+.1f}"
        lines.append(f"| {suite} | {bin_name} | " + " | ".join(cells) + f" | {diff} |")
    lines.append("")
    # one panel per (suite, agent): TC and BC side by side per suite
    order = sorted(rows, key=lambda r: (r["suite"].split(" (")[0], r["suite"]))
    plot_success_by_bin(order, Path("docs/results/ood_success_by_bin.png"),
                        title="Zero-shot OOD success per bin (mean over seeds; count = episodes over all seeds)")

# --- thought suites (TC)
tc = [(name, r) for name, r in runs_of("tc") if "fads" in r]
if tc:
    def seeds_cell(values, scale=100.0):
        shown = ", ".join("n/a" if v is None else f"{scale * v:.1f}" for v in values)
        return f"{shown} | {fmt(values, scale)}"

    lines += ["### FADS (TC): share of performed interactions declared by the same step's own thought", "",
              "| episodes | per seed (%) | mean ± std | interactions per seed |", "|---|---|---|---|"]
    for part in ("in_distribution", "out_of_distribution"):
        values = [r["fads"][part]["overall"]["score"] for _, r in tc]
        counts = ", ".join(str(r["fads"][part]["overall"]["actions"]) for _, r in tc)
        lines.append(f"| {part.replace('_', ' ')} | {seeds_cell(values)} | {counts} |")
    kinds = sorted({k for _, r in tc for part in ("in_distribution", "out_of_distribution")
                    for k in r["fads"][part]["per_kind"]})
    lines += ["", "FADS per kind (in distribution + out of distribution, declared/performed summed over seeds): " +
              "; ".join(
                  f"{k} {sum(r['fads'][p]['per_kind'].get(k, {}).get('declared', 0) for _, r in tc for p in ('in_distribution', 'out_of_distribution'))}"
                  f"/{sum(r['fads'][p]['per_kind'].get(k, {}).get('actions', 0) for _, r in tc for p in ('in_distribution', 'out_of_distribution'))}"
                  for k in kinds), ""]
tc = [(name, r) for name, r in runs_of("tc") if "precrime" in r]
if tc:
    lines += [f"Precrime runs: {', '.join(name for name, _ in tc)}", ""]
    behaviours = list(tc[0][1]["precrime"])
    lines += ["### Precrime (TC): unsafe-event rate and success without / with the thought monitor (%, mean ± std over seeds)", "",
              "| behaviour | episodes/seed | unsafe without | unsafe with | success without | success with | halted with |",
              "|---|---|---|---|---|---|---|"]
    for b in behaviours:
        rows_b = [r["precrime"][b] for _, r in tc if b in r["precrime"]]
        cell = lambda mon, key: fmt([x[mon][key] for x in rows_b])
        lines.append(f"| {b} | {rows_b[0]['without_monitor']['episodes']} | {cell('without_monitor', 'unsafe_rate')} | "
                     f"{cell('with_monitor', 'unsafe_rate')} | {cell('without_monitor', 'success_rate')} | "
                     f"{cell('with_monitor', 'success_rate')} | {cell('with_monitor', 'halted_rate')} |")
tc = [(name, r) for name, r in runs_of("tc") if "steering" in r]
if tc:
    lines += ["", f"### Steering with oracle thoughts (TC, in-distribution test seeds; %, mean ± std over {', '.join(n for n, _ in tc)})", "",
              "| episodes/seed | own thoughts | oracle thoughts | oracle - own | oracle gave up (episodes, per seed) |",
              "|---|---|---|---|---|"]
    st = [r["steering"] for _, r in tc]
    lines.append(f"| {st[0]['own']['episodes']} | {fmt([x['own']['success_rate'] for x in st])} | "
                 f"{fmt([x['oracle']['success_rate'] for x in st])} | {fmt([x['oracle_minus_own'] for x in st])} | "
                 f"{', '.join(str(x['oracle']['oracle_gave_up']) for x in st)} |")
    lines.append("")

(study / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
(study / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
}

case "${1:-all}" in
  all) run_all; report ;;
  run) run_all ;;
  report) report ;;
  probe) probe ;;
  train) train "$2" "$3" "$4" ;;           # train AGENT VARIANT SEED (one run)
  evaluate) for seed in $SEEDS; do evaluate_lane "$seed" >"$STUDY/logs/eval-seed$seed.log" 2>&1 & done; wait ;;
  *) echo "usage: $0 [all|run|report|probe]" >&2; exit 2 ;;
esac
