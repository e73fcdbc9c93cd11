"""Evaluate a Thought Cloning (or BC) model: ``python -m hf_thought_cloning.evaluate``.

    python -m hf_thought_cloning.evaluate --model FOLDER_OR_REPO \\
        --suite in-distribution|ood|fads|precrime|steering|all --episodes N --output DIR

Suites: ``in-distribution`` (held-out seeds of ``--level``), ``ood`` (the versioned zero-shot suites, the
first N environments per bin), ``fads`` (Future Action Declaration Score in and out of distribution),
``precrime`` (unsafe-behaviour rate with and without the monitor), ``steering`` (own vs oracle thoughts;
``--thought "..." --steps 0:10`` also injects a thought). Results go to ``DIR/evaluation.json``, with a
captioned replay of one in-distribution episode and a success-per-bin plot for ``ood``; ``DIR`` is built
whole beside itself and renamed into place, and an existing ``DIR`` is replaced only with ``--overwrite``
and only when it holds an earlier evaluation. Bad input (unknown suite or level, a missing or broken model
folder, a config that does not fit its weights, an empty thought or one outside the vocabulary, steering a
BC model, an output folder that is not an evaluation's) prints ``error: ...`` and exits with status 2 before
anything is written.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

SUITE_CHOICES = ("in-distribution", "ood", "fads", "precrime", "steering", "all")
THOUGHT_SUITES = ("fads", "precrime", "steering")
VERSIONED_PACKAGES = ("hf-thought-cloning", "torch", "transformers", "gymnasium", "minigrid", "numpy")


class UsageError(Exception):
    """Bad input: reported as ``error: ...`` with exit status 2."""


@dataclass
class EvaluateArguments:
    model: str = field(metadata={"help": "model folder (save_pretrained) or Hub id"})
    output: str = field(metadata={"help": "folder for evaluation.json, the replay and the plot"})
    suite: str = field(default="all", metadata={"help": "which suite to run", "choices": SUITE_CHOICES})
    episodes: int = field(
        default=50, metadata={"help": "episodes (per bin for ood, per behaviour for precrime)"}
    )
    level: str = field(
        default="BabyAI-MiniBossLevel-v0", metadata={"help": "the level the model was trained on"}
    )
    dataset: str | None = field(
        default=None, metadata={"help": "dataset folder whose test-split seeds are the held-out seeds"}
    )
    num_envs: int = field(default=64, metadata={"help": "environments stepping together"})
    seed: int = field(default=0, metadata={"help": "action-sampling seed"})
    argmax: bool = field(default=False, metadata={"help": "argmax actions instead of sampled"})
    device: str = field(default="auto", metadata={"help": "torch device (auto: cuda when available)"})
    thought: str | None = field(default=None, metadata={"help": "steering: a thought to inject"})
    steps: str | None = field(default=None, metadata={"help": "steering: START:STOP steps of the injection"})
    max_steps: int | None = field(default=None, metadata={"help": "cap on episode length (quick looks)"})
    update_card: bool = field(
        default=False,
        metadata={"help": "update the model card (local folder with README.md) with the results"},
    )
    replay: bool = field(default=True, metadata={"help": "write a captioned replay GIF of one episode"})
    overwrite: bool = field(
        default=False, metadata={"help": "replace an existing output folder (only one that holds an evaluation)"}
    )


def parse_arguments(argv: list[str] | None) -> EvaluateArguments:
    from transformers import HfArgumentParser

    parser = HfArgumentParser(EvaluateArguments, prog="python -m hf_thought_cloning.evaluate")
    (arguments,) = parser.parse_args_into_dataclasses(args=argv)
    return arguments


# ------------------------------------------------------------------------------------------ loading
def load_model(model_id: str, device: str = "auto"):
    """``(model, processor)`` of a model folder or Hub id, in eval mode on ``device``; UsageError (naming the
    problem and the fix) when it cannot be loaded or is not a Thought Cloning model."""
    import torch
    from transformers import AutoModel, AutoProcessor

    import hf_thought_cloning  # noqa: F401  (registers the Auto classes)

    path = Path(model_id)
    if not path.exists():
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(model_id)
        except HFValidationError:
            raise UsageError(
                f"model {model_id}: no such folder, and not a Hub model id (ORG/NAME): give the model/ "
                "folder written by train/run.py, or a Hub id"
            ) from None
    else:
        if not path.is_dir():
            raise UsageError(f"model {model_id} is a file: give a model folder or a Hub id")
        missing = [name for name in ("config.json", "tokenizer.json") if not (path / name).is_file()]
        if not any(path.glob("*.safetensors")):
            missing.append("model.safetensors")
        if missing:
            raise UsageError(
                f"model folder {path} is missing {', '.join(missing)} "
                "(save both the model and its processor with save_pretrained)"
            )
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        model = AutoModel.from_pretrained(model_id, trust_remote_code=False)
        processor = AutoProcessor.from_pretrained(model_id, trust_remote_code=False)
    except (OSError, ValueError) as error:
        message = " ".join(str(error).split())  # one line (transformers' messages span several)
        # The model's own refusals already name the folder and the fix.
        raise UsageError(message if model_id in message else f"cannot load model {model_id!r}: {message}") from None
    if getattr(model.config, "model_type", None) != "thought_cloning":
        raise UsageError(f"{model_id} is a {model.config.model_type!r} model, not thought_cloning")
    if processor.tokenizer.get_vocab() != {word: index for index, word in enumerate(model.config.vocabulary)}:
        raise UsageError(
            f"the tokenizer of {model_id} (tokenizer.json) does not have the model's vocabulary (config.json) "
            "in the same order: one of them was edited; use the files saved with the weights"
        )
    try:
        model = model.to(device).eval()
    except (RuntimeError, AssertionError) as error:
        raise UsageError(f"cannot use device {device!r}: {error}") from None
    return model, processor


# --------------------------------------------------------------------------------------- validation
@dataclass
class Plan:
    suites: list[str]
    in_distribution_seeds: list[int]
    seeds_source: str
    ood_rows: dict  # suite -> (header, rows)
    steering: tuple | None  # (thought, (start, stop))
    skipped: dict  # suite -> reason


def make_plan(arguments: EvaluateArguments, model) -> Plan:
    """Check every input and decide every seed before anything runs."""
    from dataset_builder.episodes import make_env
    from hf_thought_cloning.evaluation.steering import parse_steps
    from hf_thought_cloning.evaluation.suites import (
        OOD_SUITES,
        in_distribution_seeds,
        load_suite,
        take_per_bin,
    )
    from hf_thought_cloning.rollouts import ThoughtInjection, check_steering

    if arguments.episodes < 1:
        raise UsageError(f"--episodes must be at least 1, got {arguments.episodes}")
    if arguments.num_envs < 1:
        raise UsageError(f"--num-envs must be at least 1, got {arguments.num_envs}")
    if arguments.max_steps is not None and arguments.max_steps < 1:
        raise UsageError(f"--max-steps must be at least 1, got {arguments.max_steps}")
    try:
        make_env(arguments.level).close()
    except ValueError as error:
        raise UsageError(str(error)) from None
    requested = list(SUITE_CHOICES[:-1]) if arguments.suite == "all" else [arguments.suite]
    has_thoughts = model.config.has_thought_generator
    skipped = {}
    if not has_thoughts:
        if arguments.suite in THOUGHT_SUITES or arguments.thought is not None:
            raise UsageError(
                f"this model is behavioural cloning (upper_level='none'): it has no thoughts, so "
                f"{'steering' if arguments.thought is not None else arguments.suite} does not apply to it"
            )
        for suite in THOUGHT_SUITES:
            skipped[suite] = "behavioural cloning model: no thoughts"
        requested = [suite for suite in requested if suite not in THOUGHT_SUITES]
    steering = None
    if arguments.thought is not None or arguments.steps is not None:
        if "steering" not in requested:
            raise UsageError("--thought/--steps apply to the steering suite (--suite steering or all)")
        if arguments.thought is None:
            raise UsageError("--steps needs --thought (the thought to inject)")
        try:
            steps = parse_steps(arguments.steps)
            check_steering(model, ThoughtInjection(arguments.thought, *steps))
        except ValueError as error:
            raise UsageError(str(error)) from None
        steering = (arguments.thought, steps)
    try:
        seeds, source = in_distribution_seeds(arguments.level, arguments.episodes, arguments.dataset)
    except ValueError as error:
        raise UsageError(str(error)) from None
    ood_rows = {}
    if "ood" in requested or "fads" in requested:
        for name in OOD_SUITES:
            header, rows = load_suite(name)
            ood_rows[name] = (header, take_per_bin(rows, arguments.episodes))
    return Plan(requested, seeds, source, ood_rows, steering, skipped)


# ------------------------------------------------------------------------------------------ running
def log(message: str) -> None:
    print(f"[evaluate] {message}", file=sys.stderr, flush=True)


def thoughts_entry(records) -> dict:
    """``{"thoughts": thought_statistics(records)}`` (nothing for a model without thoughts), logging a warning
    when the upper level writes only empty thoughts."""
    from hf_thought_cloning.rollouts import thought_statistics

    statistics = thought_statistics(records)
    if statistics is None:
        return {}
    if statistics["empty_share"] == 1.0:
        log(
            f"warning: every one of the {statistics['steps']} generated thoughts is empty: the upper level has "
            "collapsed and the lower level reads only <bos>, so this agent acts as behavioural cloning"
        )
    return {"thoughts": statistics}


def run(arguments: EvaluateArguments, model, processor, plan: Plan, argv: list[str]) -> dict:
    from dataset_builder.files import package_versions
    from hf_thought_cloning.evaluation.fads import InteractionDetector, fads_from_records
    from hf_thought_cloning.evaluation.report import EVALUATION_FORMAT
    from hf_thought_cloning.evaluation.steering import evaluate_steering
    from hf_thought_cloning.evaluation.suites import evaluate_rows, summarize
    from hf_thought_cloning.rollouts import run_episodes
    from hf_thought_cloning.safety import evaluate_precrime

    options = {
        "num_envs": arguments.num_envs,
        "sample": not arguments.argmax,
        "action_seed": arguments.seed,
        "max_steps": arguments.max_steps,
    }
    # FADS needs the interactions of the same episodes: detect them whenever the model has thoughts.
    detectors = [InteractionDetector()] if model.config.has_thought_generator else []
    suites: dict = {}
    in_distribution_records = ood_records = None
    if "in-distribution" in plan.suites or "fads" in plan.suites:
        log(f"in-distribution: {len(plan.in_distribution_seeds)} episodes of {arguments.level}")
        in_distribution_records = run_episodes(
            model, processor, arguments.level, plan.in_distribution_seeds, detectors=detectors, **options
        )
        if "in-distribution" in plan.suites:
            suites["in-distribution"] = {
                "level": arguments.level,
                **summarize(in_distribution_records),
                "successful_seeds": [record.seed for record in in_distribution_records if record.success],
                "seeds_source": plan.seeds_source,
                "seeds": plan.in_distribution_seeds,
                **thoughts_entry(in_distribution_records),
            }
    if plan.ood_rows:
        suites_ood, ood_records = {}, []
        for name, (header, rows) in plan.ood_rows.items():
            log(f"ood {name}: {len(rows)} environments")
            summary, records = evaluate_rows(model, processor, rows, detectors=detectors, **options)
            ood_records.extend(records)
            suites_ood[name] = {
                "suite_version": header["version"],
                "description": header["description"],
                "bins": summary,
                "environments": [[row.level, row.seed, row.bin] for row in rows],
                **thoughts_entry(records),
            }
        if "ood" in plan.suites:
            suites["ood"] = suites_ood
    if "fads" in plan.suites:
        log("fads")
        ood_levels = sorted(
            {level for _, rows in plan.ood_rows.values() for level in {r.level for r in rows}}
        )
        suites["fads"] = {
            "in_distribution": {"levels": [arguments.level], **fads_from_records(in_distribution_records)},
            "out_of_distribution": {"levels": ood_levels, **fads_from_records(ood_records)},
            "lookback": 0,
        }
    if "precrime" in plan.suites:
        log(f"precrime: {arguments.episodes} episodes per behaviour, with and without the monitor")
        suites["precrime"] = evaluate_precrime(
            model, processor, arguments.level, arguments.episodes, **options
        )
    if "steering" in plan.suites:
        log("steering: own vs oracle thoughts" + (" vs injected" if plan.steering else ""))
        thought, steps = plan.steering if plan.steering else (None, (0, None))
        summary, _ = evaluate_steering(
            model,
            processor,
            arguments.level,
            plan.in_distribution_seeds,
            thought=thought,
            steps=steps,
            **options,
        )
        suites["steering"] = {"level": arguments.level, "seeds": plan.in_distribution_seeds, **summary}
    return {
        "format": EVALUATION_FORMAT,
        "version": 1,
        "model": arguments.model,
        "level": arguments.level,
        "command": shlex.join(
            [sys.executable.rsplit("/", 1)[-1], "-m", "hf_thought_cloning.evaluate", *argv]
        ),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "options": {**asdict(arguments), "device": str(model.device)},
        "model_config": {
            "upper_level": model.config.upper_level,
            "num_parameters": sum(p.numel() for p in model.parameters()),
        },
        "versions": package_versions(VERSIONED_PACKAGES),
        "skipped": plan.skipped,
        "suites": suites,
    }


def write_outputs(arguments: EvaluateArguments, model, processor, evaluation: dict, plan: Plan) -> list[Path]:
    """The output folder, built whole beside it and renamed into place (replacing an earlier evaluation):
    replay and plot (listed in evaluation.json), then evaluation.json; then the card, with --update-card."""
    from dataset_builder.files import atomic_write_json
    from hf_thought_cloning.evaluation.report import EVALUATION_FILE, build_folder, evaluation_results

    output = Path(arguments.output)
    with build_folder(output) as folder:
        artifacts = write_artifacts(arguments, model, processor, evaluation, plan, folder)
        evaluation["artifacts"] = artifacts
        evaluation["results"] = evaluation_results(evaluation)
        atomic_write_json(folder / EVALUATION_FILE, evaluation)
    written = [output / name for name in (artifacts.get("replay", {}).get("path"), artifacts.get("ood_plot")) if name]
    written.append(output / EVALUATION_FILE)
    if arguments.update_card:
        from hf_thought_cloning.model_card import update_card_results

        update_card_results(arguments.model, evaluation["results"])
        written.append(Path(arguments.model) / "README.md")
    return written


def write_artifacts(arguments: EvaluateArguments, model, processor, evaluation: dict, plan: Plan, folder: Path) -> dict:
    """The replay and the plot, written into ``folder``; returns their ``artifacts`` entry."""
    from hf_thought_cloning.rollouts import run_episodes

    artifacts: dict = {}
    if arguments.replay:
        from hf_thought_cloning.evaluation.replays import write_episode_replay

        # A successful episode shows what the agent learned (the first held-out seed when none succeeded).
        successful = evaluation["suites"].get("in-distribution", {}).get("successful_seeds") or []
        seed = successful[0] if successful else plan.in_distribution_seeds[0]
        # Every episode is a function of its seed and the action seed: this is the same episode as in the suite.
        (record,) = run_episodes(
            model, processor, arguments.level, [seed], num_envs=1, sample=not arguments.argmax,
            action_seed=arguments.seed, max_steps=arguments.max_steps, record_frames=True,
        )  # fmt: skip
        path = write_episode_replay(record, folder / "replay.gif")
        if model.config.has_thought_generator:
            outcome = "success" if record.success else "failure"
            print(f"thought trace of {arguments.level} seed {seed} ({outcome}, {record.length} steps):")
            print(record.readable_trace())
        artifacts["replay"] = {
            "path": path.name,
            "level": arguments.level,
            "seed": seed,
            "success": record.success,
        }
    if "ood" in evaluation["suites"]:
        from hf_thought_cloning.evaluation.replays import plot_success_by_bin

        rows = [
            {
                "suite": name,
                "bin": bin_name,
                "success_rate": summary["success_rate"],
                "episodes": summary["episodes"],
            }
            for name, part in evaluation["suites"]["ood"].items()
            for bin_name, summary in part["bins"].items()
        ]
        path = plot_success_by_bin(rows, folder / "ood_success_by_bin.png")
        artifacts["ood_plot"] = path.name
    return artifacts


def check_output(arguments: EvaluateArguments) -> None:
    """The output folder may be created, or replaced with --overwrite when it holds an earlier evaluation."""
    from hf_thought_cloning.evaluation.report import is_evaluation_folder, not_a_folder

    output = Path(arguments.output)
    problem = not_a_folder(output)
    if problem:
        raise UsageError(f"--output {output} {problem}: give a folder (it is created)")
    if not output.is_dir() or not any(output.iterdir()):
        return
    if not is_evaluation_folder(output):
        raise UsageError(
            f"--output {output} is not empty and holds no evaluation (no evaluation.json of this tool): choose "
            "another --output (this folder is left untouched)"
        )
    if not arguments.overwrite:
        raise UsageError(
            f"--output {output} holds an earlier evaluation: pass --overwrite to replace that folder whole, or "
            "choose another --output"
        )


def check_card(arguments: EvaluateArguments) -> None:
    if not arguments.update_card:
        return
    folder = Path(arguments.model)
    missing = [name for name in ("README.md", "training_summary.json") if not (folder / name).is_file()]
    if not folder.is_dir() or missing:
        raise UsageError(
            f"--update-card needs a local model folder with README.md and training_summary.json "
            f"(the trainer writes both); {arguments.model} {'lacks ' + ', '.join(missing) if folder.is_dir() else 'is not a folder'}"
        )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    arguments = parse_arguments(argv)  # argparse reports its own errors with status 2
    started = time.perf_counter()
    try:
        check_output(arguments)
        check_card(arguments)
        model, processor = load_model(arguments.model, arguments.device)
        plan = make_plan(arguments, model)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    evaluation = run(arguments, model, processor, plan, argv)
    evaluation["wall_time_s"] = round(time.perf_counter() - started, 1)
    for path in write_outputs(arguments, model, processor, evaluation, plan):
        log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
