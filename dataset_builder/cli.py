"""``python -m dataset_builder {generate,validate,show,card,push}``: the dataset builder's command line."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
from transformers import HfArgumentParser

from dataset_builder.generate import GenerateArgs, GenerationError, generate, load_manifest, tasks_of
from dataset_builder.plan import PlanError
from hf_thought_cloning.traces import format_trace

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


def _parse(dataclass_type, prog: str, argv: list[str], folder_arg: bool):
    parser = HfArgumentParser(dataclass_type, prog=prog)
    if folder_arg:
        parser.add_argument("folder", help="dataset folder")
    parsed = parser.parse_args_into_dataclasses(args=argv)
    args = parsed[0]
    folder = Path(parsed[1].folder) if folder_arg else None
    return args, folder


def run_generate(argv: list[str]) -> int:
    (args, _) = _parse(GenerateArgs, "python -m dataset_builder generate", argv, folder_arg=False)
    summary = generate(args)
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


def run_validate(argv: list[str]) -> int:
    from dataset_builder.validate import validate

    (_, folder) = _parse(ValidateArgs, "python -m dataset_builder validate", argv, folder_arg=True)
    report = validate(folder)
    print(report.summary())
    return 0 if report.ok else 1


def run_show(argv: list[str]) -> int:
    (args, folder) = _parse(ShowArgs, "python -m dataset_builder show", argv, folder_arg=True)
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
        rows = pq.read_metadata(folder / task.data_path).num_rows
        if remaining < rows:
            row = pq.read_table(folder / task.data_path).slice(remaining, 1).to_pylist()[0]
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
    from dataset_builder.card import repo_hint, rewrite_card
    from dataset_builder.publish import check_dataset_folder, check_repo_id

    (args, folder) = _parse(CardArgs, "python -m dataset_builder card", argv, folder_arg=True)
    folder = check_dataset_folder(folder)
    if args.repo_id is not None:
        check_repo_id(args.repo_id)
    path = rewrite_card(folder, args.repo_id)
    print(f'wrote {path}: load_dataset("{repo_hint(folder, args.repo_id)}", ...)')
    return 0


def run_push(argv: list[str]) -> int:
    from dataset_builder.publish import push_dataset
    from dataset_builder.validate import validate

    (args, folder) = _parse(PushArgs, "python -m dataset_builder push", argv, folder_arg=True)
    report = validate(folder)
    if not report.ok:
        print(report.summary(), file=sys.stderr)
        print("push refused: fix the dataset folder first", file=sys.stderr)
        return 1
    url = push_dataset(folder, args.repo_id, private=args.private, token=args.token, revision=args.revision)
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
    except (UsageError, PlanError, GenerationError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
