"""Package a trained model folder for the Hub: ``python -m hf_thought_cloning.packaging``.

    python -m hf_thought_cloning.packaging --model outputs/study/tc-seed0/model \\
        --evaluation outputs/study/tc-seed0/eval-id outputs/study/tc-seed0/eval-ood \\
        --repo_id my-org/thought-cloning-babyai --dataset_hub_id my-org/babyai-thoughts-minibosslevel \\
        --output outputs/thought-cloning-babyai [--push]

The output folder is the model folder (weights, config, processor, remote code) plus a card rendered for
``repo_id`` whose ``model-index`` holds the results of the given evaluations, and the raw
``evaluation/<name>.json`` files they came from. Evaluations are merged in the order given: a metric that
an earlier evaluation already reports (same level, dataset name and metric) is not taken again, and the
number of such duplicates is printed (e.g. ``--suite all`` re-measures in-distribution success on fewer
episodes than a dedicated ``--suite in-distribution`` run). Every evaluation must have been made on this
model folder, and without ``--max-steps`` (a quick look whose episodes were cut short) unless
``--allow_capped`` is given; each result in the card says how many episodes it was measured on and, for a
capped run, the cap.

The folder is assembled beside ``--output`` and renamed into place; it holds ``packaging.json``, which marks
it as a package: ``--overwrite`` replaces only such a folder (or an empty one), never a run folder, a model
folder or anything else. ``--push`` uploads it to the Hub at ``HF_ENDPOINT`` (huggingface_hub's setting).
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from dataset_builder.files import atomic_write_json, check_repo_id
from hf_thought_cloning.evaluation.report import (
    EVALUATION_FORMAT,
    build_folder,
    evaluation_results,
    holds_record,
    not_a_folder,
)
from hf_thought_cloning.model_card import SUMMARY_FILE, render_model_card

REQUIRED_FILES = ("config.json", "model.safetensors", SUMMARY_FILE)
# Written into every package: what it was made from, and the mark that --overwrite may replace the folder.
PACKAGE_FILE = "packaging.json"
PACKAGE_FORMAT = "hf-thought-cloning/package"


@dataclass
class PackagingArguments:
    model: str = field(metadata={"help": "Trained model folder (a run's model/ or best/ folder)."})
    output: str = field(metadata={"help": "Folder to write (the layout of the Hub model repo)."})
    repo_id: str = field(metadata={"help": "Hub model id ORG/NAME the card is written for."})
    evaluation: list[str] = field(
        default_factory=list,
        metadata={"help": "Evaluation folders or evaluation.json files of this model, most trusted first."},
    )
    dataset_hub_id: str | None = field(
        default=None, metadata={"help": "Hub id ORG/NAME of the training dataset (the card's `datasets`)."}
    )
    overwrite: bool = field(
        default=False, metadata={"help": "Replace an existing output folder (only a package made by this tool)."}
    )
    allow_capped: bool = field(
        default=False,
        metadata={"help": "Accept evaluations made with --max-steps (quick looks); the cap is shown with each result."},
    )
    push: bool = field(default=False, metadata={"help": "Upload the packaged folder to repo_id afterwards."})
    private: bool = field(default=False, metadata={"help": "Create the Hub repo as private (with --push)."})


class PackagingError(ValueError):
    """Bad input to the packager: the message names the problem and the fix."""


def load_evaluation(path: str | Path, model_folder: Path) -> tuple[str, dict]:
    """``(name, evaluation)`` of an evaluation folder or file, checked to be an evaluation of ``model_folder``."""
    path = Path(path)
    file = path / "evaluation.json" if path.is_dir() else path
    if not file.is_file():
        raise PackagingError(f"no evaluation at {path}: give an evaluation folder or its evaluation.json")
    try:
        evaluation = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PackagingError(f"{file} is not valid JSON ({error}); re-run the evaluation") from None
    if not isinstance(evaluation, dict) or evaluation.get("format") != EVALUATION_FORMAT:
        raise PackagingError(f"{file} is not a `python -m hf_thought_cloning.evaluate` output")
    evaluated = Path(evaluation["model"])
    if not evaluated.exists() or evaluated.resolve() != model_folder.resolve():
        raise PackagingError(
            f"{file} evaluates {evaluation['model']!r}, not {str(model_folder)!r}: package the model that was "
            "evaluated, or evaluate this one (paths are compared from the current directory)"
        )
    return (file.parent.name if file.name == "evaluation.json" else file.stem), evaluation


def merge_results(evaluations: list[dict]) -> tuple[list[dict], int]:
    """Card results of ``evaluations`` in order, each metric once; returns ``(results, duplicates_dropped)``."""
    merged: dict[tuple, dict] = {}
    duplicates = 0
    for evaluation in evaluations:
        for result in evaluation_results(evaluation):
            key = (
                result["dataset_type"],
                result["dataset_name"],
                result["metric_type"],
                result["metric_name"],
            )
            if key in merged:
                duplicates += 1
            else:
                merged[key] = result
    return list(merged.values()), duplicates


def package_model(arguments: PackagingArguments) -> tuple[Path, int, int]:
    """Write the packaged folder; returns ``(output, results_in_card, duplicates_dropped)``."""
    model_folder, output = Path(arguments.model), Path(arguments.output)
    missing = [name for name in REQUIRED_FILES if not (model_folder / name).is_file()]
    if missing:
        raise PackagingError(
            f"{model_folder} is not a trained model folder (missing {', '.join(missing)}): give the model/ or "
            "best/ folder written by train/run.py"
        )
    for repo_id in filter(None, (arguments.repo_id, arguments.dataset_hub_id)):
        try:
            check_repo_id(repo_id)
        except ValueError as error:
            raise PackagingError(str(error)) from None
    if output.resolve() == model_folder.resolve() or model_folder.resolve() in output.resolve().parents:
        raise PackagingError("--output must lie outside --model (the model folder is read, never changed)")
    if output.resolve() in model_folder.resolve().parents:
        raise PackagingError(f"--output {output} holds the model folder {model_folder}: choose another --output")
    check_output(output, arguments.overwrite)
    loaded = [load_evaluation(path, model_folder) for path in arguments.evaluation]
    names = [name for name, _ in loaded]
    if len(set(names)) != len(names):
        raise PackagingError(
            f"two evaluations share a folder name ({names}); they would overwrite each other"
        )
    capped = [(name, evaluation["options"]["max_steps"]) for name, evaluation in loaded
              if evaluation.get("options", {}).get("max_steps") is not None]  # fmt: skip
    if capped and not arguments.allow_capped:
        listed = ", ".join(f"{name} (--max-steps {cap})" for name, cap in capped)
        raise PackagingError(
            f"evaluations made with a step cap are quick looks, not results: {listed}; re-run them without "
            "--max-steps, or pass --allow_capped to publish them anyway (each result then shows its cap)"
        )
    results, duplicates = merge_results([evaluation for _, evaluation in loaded])

    training = json.loads((model_folder / SUMMARY_FILE).read_text(encoding="utf-8"))
    training["repo_id"] = arguments.repo_id
    if arguments.dataset_hub_id:
        training["dataset"] = {**training["dataset"], "hub_id": arguments.dataset_hub_id}
    else:
        training["dataset"].pop("hub_id", None)  # decided again from path_or_id

    with build_folder(output) as folder:
        shutil.copytree(model_folder, folder, dirs_exist_ok=True)
        (folder / PACKAGE_FILE).unlink(missing_ok=True)  # a package re-packaged gets its own record
        for name, evaluation in loaded:
            atomic_write_json(folder / "evaluation" / f"{name}.json", evaluation)
        render_model_card(folder, training, results)
        atomic_write_json(folder / PACKAGE_FILE, {
            "format": PACKAGE_FORMAT, "version": 1, "model": str(model_folder), "repo_id": arguments.repo_id,
            "evaluations": names, "allow_capped": arguments.allow_capped,
        })  # fmt: skip
    return output, len(results), duplicates


def is_package(folder: Path) -> bool:
    """Whether ``folder`` was written by this packager (it holds its ``packaging.json``)."""
    return holds_record(folder, PACKAGE_FILE, PACKAGE_FORMAT)


def check_output(output: Path, overwrite: bool) -> None:
    """``output`` may be created, or replaced with --overwrite when it is empty or a package."""
    problem = not_a_folder(output)
    if problem:
        raise PackagingError(f"--output {output} {problem}: give a folder (it is created)")
    if not output.exists():
        return
    if not overwrite:
        raise PackagingError(f"{output} exists: pass --overwrite to replace it, or choose another --output")
    if any(output.iterdir()) and not is_package(output):
        raise PackagingError(
            f"--overwrite refused: {output} is not a packaged model folder (it has no {PACKAGE_FILE}), so it is "
            "left untouched; choose another --output (a package made before packaging.json existed: delete it "
            "yourself)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(PackagingArguments, prog="python -m hf_thought_cloning.packaging")
    (arguments,) = parser.parse_args_into_dataclasses(args=argv)
    try:
        output, kept, duplicates = package_model(arguments)
    except PackagingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"packaged {arguments.model} as {output} for {arguments.repo_id}: {kept} results in the card's "
          f"model-index from {len(arguments.evaluation)} evaluation(s), {duplicates} duplicate metric(s) not taken")  # fmt: skip
    if arguments.push:
        from hf_thought_cloning.training.hub import HubProblem, push_folder

        try:
            url = push_folder(output, arguments.repo_id, private=arguments.private,
                              commit_message="Upload Thought Cloning model (packaged with its evaluations)")  # fmt: skip
        except HubProblem as error:
            print(f"error: {output} is packaged, but pushing it to {arguments.repo_id} failed: {error}; push it "
                  "again once the Hub can be reached (re-run with --overwrite --push)",
                  file=sys.stderr)  # fmt: skip
            return 2
        print(f"pushed {output} to {url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
