"""Make the demo a Hugging Face Space: ``python -m demo.push``.

    python -m demo.push --repo_id ORG/thought-cloning-demo --model_id ORG/thought-cloning-babyai \\
        --output outputs/space [--push] [--private] [--overwrite]

The output folder is what the Space runs: ``app.py`` (``demo/space_app.py``), ``space.json`` (the model it
loads), a ``README.md`` whose front matter says ``sdk: gradio`` (the installed Gradio version),
``app_file: app.py`` and ``models: [model_id]``, a ``requirements.txt`` with the project's dependencies (the
installed distribution's; torch from the CPU wheel index), and the project's source packages, so the Space
runs this checkout's code. ``model_id`` is a Hub model (publish the agent first with
``python -m hf_thought_cloning.packaging ... --push``). The folder is assembled beside ``--output`` and
renamed into place; ``--overwrite`` replaces only a folder this command wrote. ``--push`` uploads it to the
Space ``repo_id`` at ``HF_ENDPOINT`` (huggingface_hub's setting). Bad input prints ``error: ...``, exit 2.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path

from huggingface_hub import SpaceCard, SpaceCardData
from transformers import HfArgumentParser

from dataset_builder.files import atomic_write_json, atomic_write_text, check_repo_id
from hf_thought_cloning.evaluation.report import build_folder, holds_record, not_a_folder

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE_PACKAGES = ("hf_thought_cloning", "dataset_builder", "model_cards", "demo")
SPACE_FILE = "space.json"  # the model the Space loads; also marks a folder this command wrote
SPACE_FORMAT = "hf-thought-cloning/space"
DISTRIBUTION = "hf-thought-cloning"
# Spaces install the CPU torch wheel from here (PyPI's default torch is a multi-GB CUDA build).
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


@dataclass
class SpaceArguments:
    repo_id: str = field(metadata={"help": "the Space, ORG/NAME"})
    model_id: str = field(metadata={"help": "Hub model ORG/NAME the Space loads (its card's `models`)"})
    output: str = field(metadata={"help": "folder to write (the layout of the Space repo)"})
    push: bool = field(default=False, metadata={"help": "upload the folder to the Space afterwards"})
    private: bool = field(default=False, metadata={"help": "create the Space as private (with --push)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an output folder this command wrote"})


class SpaceError(ValueError):
    """Bad input: the message names the problem and the fix."""


def requirements_text() -> str:
    """The project's runtime dependencies, as the installed distribution declares them (extras left out)."""
    try:
        declared = requires(DISTRIBUTION) or []
    except PackageNotFoundError:
        raise SpaceError(
            f"the {DISTRIBUTION} distribution is not installed, so its dependencies are unknown: run "
            "./scripts/setup.sh (it installs the project into .venv)"
        ) from None
    runtime = [line for line in declared if "extra ==" not in line]
    return "\n".join([
        f"# {DISTRIBUTION}'s dependencies; gradio comes with the Space (sdk_version in README.md).",
        f"--extra-index-url {TORCH_INDEX}", *runtime, "",
    ])  # fmt: skip


def space_card(repo_id: str, model_id: str) -> SpaceCard:
    data = SpaceCardData(
        title="Thought Cloning: watch it think", sdk="gradio", sdk_version=version("gradio"),
        python_version=f"{sys.version_info.major}.{sys.version_info.minor}", app_file="app.py",
        license="apache-2.0", models=[model_id], tags=["thought-cloning", "babyai", "interpretability"],
        emoji="🧠", colorFrom="indigo", colorTo="green",
        short_description="Read an agent's thoughts, steer them, stop it before it acts",
    )  # fmt: skip
    body = f"""
# Thought Cloning: watch it think

A [Thought Cloning](https://arxiv.org/abs/2306.00323) agent ([{model_id}](https://huggingface.co/{model_id}))
in BabyAI: it writes a thought, then acts on it. Step or play an episode and read its thoughts beside the
demonstrator's; type a thought for it to act on, or hand it the demonstrator's; switch on precrime and it
halts before an unsafe action, showing the thought that gave it away. Download the captioned replay and the
trace of any episode.

Made with `python -m demo.push --repo_id {repo_id} --model_id {model_id}` from hf-thought-cloning.
"""
    return SpaceCard(f"---\n{data.to_yaml()}\n---\n{body}")


def build_space(arguments: SpaceArguments) -> Path:
    """Write the Space folder; returns it."""
    for name in ("repo_id", "model_id"):
        try:
            check_repo_id(getattr(arguments, name))
        except ValueError as error:
            raise SpaceError(f"--{name}: {error}") from None
    output = Path(arguments.output)
    problem = not_a_folder(output)
    if problem:
        raise SpaceError(f"--output {output} {problem}: give a folder (it is created)")
    if output.exists() and any(output.iterdir()):
        if not holds_record(output, SPACE_FILE, SPACE_FORMAT):
            raise SpaceError(
                f"--output {output} is not empty and not a Space folder of this command: choose another"
            )
        if not arguments.overwrite:
            raise SpaceError(
                f"{output} holds a Space folder: pass --overwrite to replace it, or choose another --output"
            )
    requirements = requirements_text()
    card = space_card(arguments.repo_id, arguments.model_id)
    with build_folder(output) as folder:
        for package in SOURCE_PACKAGES:
            shutil.copytree(
                REPO_ROOT / package, folder / package, ignore=shutil.ignore_patterns("__pycache__")
            )
        shutil.copyfile(REPO_ROOT / "demo" / "space_app.py", folder / "app.py")
        atomic_write_text(folder / "requirements.txt", requirements)
        atomic_write_text(folder / "README.md", str(card))
        atomic_write_json(folder / SPACE_FILE, {"format": SPACE_FORMAT, "version": 1, "repo_id": arguments.repo_id,
                                                "model": arguments.model_id})  # fmt: skip
    return output


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(SpaceArguments, prog="python -m demo.push")
    (arguments,) = parser.parse_args_into_dataclasses(args=argv)
    try:
        output = build_space(arguments)
    except SpaceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote the Space folder {output} for {arguments.repo_id} (model {arguments.model_id})")
    if arguments.push:
        from hf_thought_cloning.training.hub import HubProblem, push_space

        try:
            url = push_space(output, arguments.repo_id, private=arguments.private)
        except HubProblem as error:
            print(f"error: {output} is written, but pushing it to {arguments.repo_id} failed: {error}; push it "
                  "again once the Hub can be reached (re-run with --overwrite --push)", file=sys.stderr)  # fmt: skip
            return 2
        print(f"pushed {output} to {url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
