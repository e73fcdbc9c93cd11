"""``python -m dataset_builder {generate,validate,show,card,push}``: the dataset builder's command line.

Start-up stays light: this module imports only the standard library, and each command parses its options
(with transformers' ``HfArgumentParser``, which imports no torch) before it imports what it needs
(``datasets``, minigrid, huggingface_hub), so ``--help`` and a mistyped option are answered at once, and no
command imports torch or the model package (tested).
"""

from __future__ import annotations

import gc
import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

# The conventional exit status of a command stopped by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130

USAGE = """usage: python -m dataset_builder COMMAND [options]

commands:
  generate   generate a thought-trajectory dataset folder (or resume one)
  validate   check a dataset folder: layout, card, schema, lengths, vocabulary, seeds
  show       print one episode's mission and thought trace
  card       re-render a dataset folder's README.md for its Hub repo id (--repo_id ORG/NAME)
  push       publish a dataset folder to the Hugging Face Hub

`python -m dataset_builder COMMAND --help` shows a command's options."""


@dataclass
class ValidateArgs:
    """Settings of ``python -m dataset_builder validate DIR``."""


@dataclass
class ShowArgs:
    """Settings of ``python -m dataset_builder show DIR``."""

    level: str | None = field(default=None, metadata={"help": "Level (dataset config); default: the first."})
    split: str = field(default="train", metadata={"help": "Split to read from."})
    index: int = field(default=0, metadata={"help": "Row index of the episode within the split."})


@dataclass
class CardArgs:
    """Settings of ``python -m dataset_builder card DIR``."""

    repo_id: str | None = field(
        default=None,
        metadata={
            "help": "Dataset repo the card's usage snippet loads, ORG/NAME (default: <org>/<folder name>)."
        },
    )


@dataclass
class PushArgs:
    """Settings of ``python -m dataset_builder push DIR``."""

    repo_id: str = field(metadata={"help": "Target dataset repo, ORG/NAME."})
    private: bool = field(default=False, metadata={"help": "Create the repo as private."})
    token: str | None = field(default=None, metadata={"help": "Hub token (default: the logged-in one)."})
    revision: str | None = field(default=None, metadata={"help": "Branch to push to (default: main)."})


class UsageError(ValueError):
    """Bad command-line input."""


def _parse(settings: type, prog: str, argv: list[str], folder_arg: bool):
    """``argv`` as an instance of the dataclass ``settings`` (and the positional dataset folder).

    ``transformers.hf_argparser`` alone imports neither torch nor the model classes (tested), so ``--help``
    stays well under a second.
    """
    from transformers.hf_argparser import HfArgumentParser

    parser = HfArgumentParser(settings, prog=prog)
    if folder_arg:
        parser.add_argument("folder", help="dataset folder")
    parsed = parser.parse_args_into_dataclasses(args=argv)
    folder = Path(parsed[1].folder) if folder_arg else None
    return parsed[0], folder


def run_generate(argv: list[str]) -> int:
    from dataset_builder.plan import GenerateArgs

    (args, _) = _parse(GenerateArgs, "python -m dataset_builder generate", argv, folder_arg=False)
    # The imports (datasets, pandas, pyarrow, minigrid, huggingface_hub) create over 100,000 long-lived
    # objects: collecting garbage while they are made, and walking them again in every full collection
    # while the bot allocates, is wasted work (0.25 s of a 600-episode run, docs/PERFORMANCE.md).
    # So the collector is off during the imports, and what they made is frozen out of its reach for the run
    # (and unfrozen afterwards, for callers of main() in a longer-lived process).
    collecting = gc.isenabled()
    gc.disable()
    try:
        import dataset_builder.generate  # noqa: F401  (the heavy imports)

        gc.freeze()
        if collecting:
            gc.enable()
        return _generate(args, argv)
    finally:
        gc.unfreeze()
        if collecting:
            gc.enable()


def _generate(args, argv: list[str]) -> int:
    from dataset_builder.generate import generate
    from dataset_builder.thoughts import ThoughtTemplateError

    try:
        summary = generate(args)
    except KeyboardInterrupt:
        print(
            "error: interrupted; the shards finished so far are kept (an unfinished one leaves nothing behind): "
            f"continue with --resume: {_resume_command(argv)}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except ThoughtTemplateError as error:  # only raised with --strict-templates
        lenient = [a for a in argv if a.replace("_", "-") != "--strict-templates"]
        print(
            f"error: {error}. --strict-templates stops at such a plan; the shards finished so far are kept. "
            "Without --strict-templates the episode is recorded as a template_gap failure instead: "
            f"continue with --resume: {_resume_command(lenient)}",
            file=sys.stderr,
        )
        return 2
    print(json.dumps(summary, indent=1))
    if summary.get("failures"):
        print(
            f"note: {sum(summary['failures'].values())} episode(s) not stored, by reason: {summary['failures']}; "
            "seeds and details in generation/shards/*.json, counts in the dataset card",
            file=sys.stderr,
        )
    if not summary["complete"]:
        print(
            f"{summary['shards_missing']} of {summary['shards_total']} shards still missing (other machines' "
            "share, or an interrupted run): once all shard files are in this folder, rerun the same command "
            "with --resume and without --shard-index/--num-shards to write the dataset card.",
            file=sys.stderr,
        )
    return 0


def _resume_command(argv: list[str]) -> str:
    """The same generate command with ``--resume`` (and without ``--overwrite``, which it contradicts)."""
    kept = [a for a in argv if a.replace("_", "-") not in ("--overwrite", "--resume")]
    return shlex.join(["python", "-m", "dataset_builder", "generate", *kept, "--resume"])


def run_validate(argv: list[str]) -> int:
    (_, folder) = _parse(ValidateArgs, "python -m dataset_builder validate", argv, folder_arg=True)
    from dataset_builder.validate import validate

    report = validate(folder)
    print(report.summary())
    return 0 if report.ok else 1


def run_show(argv: list[str]) -> int:
    (args, folder) = _parse(ShowArgs, "python -m dataset_builder show", argv, folder_arg=True)
    import pyarrow.parquet as pq

    from dataset_builder.files import read_parquet
    from dataset_builder.generate import load_manifest, tasks_of
    from dataset_builder.traces import format_trace

    if args.index < 0:
        raise UsageError(f"--index must be 0 or more (the row within the split), got {args.index}")
    manifest = load_manifest(folder)
    level = args.level or manifest["levels"][0]
    if level not in manifest["levels"]:
        raise UsageError(f"level {level!r} is not in {folder} (levels: {', '.join(manifest['levels'])})")
    if args.split not in manifest["splits"]:
        raise UsageError(f"split {args.split!r} is not in {folder} (splits: {', '.join(manifest['splits'])})")
    remaining = args.index
    for task in tasks_of(manifest):
        if task.level != level or task.split != args.split:
            continue
        if not (folder / task.data_path).is_file():
            raise UsageError(
                f"shard {task.data_path} is missing from {folder}: check the folder with "
                f"`python -m dataset_builder validate {folder}`"
            )
        rows = pq.read_metadata(folder / task.data_path).num_rows
        if remaining < rows:
            row = read_parquet(folder / task.data_path).slice(remaining, 1).to_pylist()[0]
            print(
                f"{level} {args.split}[{args.index}]  seed {row['seed']}  {row['num_steps']} steps  reward {row['reward']:.3f}"
            )
            print(format_trace(row["mission"], row["thoughts"], row["actions"], row["noisy"]))
            return 0
        remaining -= rows
    raise UsageError(
        f"index {args.index} is out of range: {level}/{args.split} has {args.index - remaining} episodes"
    )


def run_card(argv: list[str]) -> int:
    (args, folder) = _parse(CardArgs, "python -m dataset_builder card", argv, folder_arg=True)
    from dataset_builder.card import repo_hint, rewrite_card
    from dataset_builder.files import check_repo_id
    from dataset_builder.publish import check_dataset_folder

    folder = check_dataset_folder(folder)
    if args.repo_id is not None:
        check_repo_id(args.repo_id)
    path = rewrite_card(folder, args.repo_id)
    print(f'wrote {path}: load_dataset("{repo_hint(folder, args.repo_id)}", ...)')
    return 0


def run_push(argv: list[str]) -> int:
    (args, folder) = _parse(PushArgs, "python -m dataset_builder push", argv, folder_arg=True)
    from huggingface_hub.errors import HfHubHTTPError

    from dataset_builder.publish import PublishError, push_dataset
    from dataset_builder.validate import validate

    report = validate(folder)
    if not report.ok:
        print(report.summary(), file=sys.stderr)
        print("push refused: fix the dataset folder first", file=sys.stderr)
        return 1
    try:
        url = push_dataset(folder, args.repo_id, private=args.private, token=args.token, revision=args.revision)
    except PublishError as error:
        raise UsageError(str(error)) from error
    except HfHubHTTPError as error:
        raise UsageError(f"the Hub refused the push of {folder} to {args.repo_id}: {error}") from error
    print(f"pushed {folder} to {url}")
    return 0


COMMANDS = {
    "generate": run_generate,
    "validate": run_validate,
    "show": run_show,
    "card": run_card,
    "push": run_push,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f"unknown command {argv[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        return command(argv[1:])
    except ValueError as error:  # UsageError, PlanError, GenerationError, DatasetFolderError: bad input
        print(f"error: {error}", file=sys.stderr)
        return 2
