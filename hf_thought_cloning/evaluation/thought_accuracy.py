"""Thought accuracy of a trained agent on a dataset split, for any upper level that writes thoughts.

Every step of every episode is scored against the demonstrator's thought at that step, in one of two modes:

* teacher forcing (the default): the upper level reads the demonstrator's previous thoughts, and its decoder
  the demonstrator's thought so far; its greedy next token at every position is compared with the
  demonstrator's (the model's ``forward(..., teacher_forcing=True)``);
* no teacher forcing (``--no-teacher-forcing``): the upper level reads its own previous thoughts and decodes
  its own greedy thought (``forward(..., teacher_forcing=False)``, the thoughts it writes when acting); the
  thought it writes, its end-of-thought token included, is compared position by position with the
  demonstrator's, and the positions after its end-of-thought count as wrong.

Reported: the token accuracy (in the upper level's own tokens: our words for the paper's upper level, the VLM
tokenizer's pieces for a VLM; the end-of-thought token included) and the share of steps whose whole thought is
right, which does not depend on the tokenizer: over all steps, and over the steps whose thought differs from
the previous one (copying the previous thought, ``copy_previous_accuracy``, scores on the others).

    python -m hf_thought_cloning.evaluation.thought_accuracy --model RUN/model --dataset DATA --split validation
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..modeling_thought_cloning import IGNORE_INDEX, ThoughtCloningModel
from ..processing_thought_cloning import ThoughtCloningProcessor
from ..training.metrics import thought_word_positions

__all__ = ["changed_steps", "check_scorable", "load_episodes", "main", "step_matches", "thought_accuracy"]


def changed_steps(episodes: Sequence[Mapping[str, Any]]) -> torch.BoolTensor:
    """(steps,) True where a step's thought differs from the previous step's (always at an episode's first
    step), the steps in (episode, step) order."""
    return torch.tensor(
        [t == 0 or thoughts[t] != thoughts[t - 1] for thoughts in (list(e["thoughts"]) for e in episodes)
         for t in range(len(thoughts))],
        dtype=torch.bool,
    )  # fmt: skip


def check_scorable(model: ThoughtCloningModel, teacher_forcing: bool) -> None:
    """Raise ValueError when ``model``'s thoughts cannot be scored in this mode."""
    config = model.config
    if not config.has_thought_generator:
        raise ValueError(
            f"the model has no Thought Generator (upper_level={config.upper_level!r}): no thoughts to score"
        )
    if config.upper_level == "vlm":
        if not teacher_forcing:
            raise ValueError(
                "a VLM upper level's thoughts can be scored with teacher forcing only: its pass without teacher "
                "forcing generates text and returns no thought logits to score (drop --no-teacher-forcing)"
            )
        if model.vlm_prompter is None:
            raise ValueError("the VLM upper level has no prompter (load the model from a folder saved with its "
                             "vlm_prompter/)")  # fmt: skip
    elif teacher_forcing and config.thought_channel == "soft_words":
        raise ValueError(
            "thought_channel='soft_words' (the no-thought-supervision ablation) never reads the demonstrator's "
            "thoughts: score it without teacher forcing (teacher_forcing=False, --no-teacher-forcing)"
        )


@torch.no_grad()
def step_matches(
    model: ThoughtCloningModel,
    processor: ThoughtCloningProcessor,
    episodes: Sequence[Mapping[str, Any]],
    *,
    teacher_forcing: bool = True,
) -> tuple[torch.BoolTensor, torch.BoolTensor]:
    """Per step and target position: (right, counted), both (steps, W), the steps of ``episodes`` in
    (episode, step) order; ``counted`` marks the target tokens (the thought's tokens, then its eos). The modes
    are those of [`thought_accuracy`]; raises ValueError for one the model cannot be scored in."""
    check_scorable(model, teacher_forcing)
    device = model.device
    if model.config.upper_level == "vlm":
        inputs = {
            name: value.to(device) for name, value in model.vlm_prompter.training_inputs(episodes).items()
        }
        model_inputs = {name[len("vlm_") :]: value for name, value in inputs.items() if name != "vlm_labels"}
        hidden = model.vlm.model(**model_inputs).last_hidden_state[:, :-1]
        # Position i predicts token i + 1; only the positions that predict a target token go through the LM head
        # (all of them would cost steps x prompt length x the VLM's vocabulary logits).
        targets = inputs["vlm_labels"][:, 1:]
        counted = targets != IGNORE_INDEX
        right = torch.zeros_like(counted)
        right[counted] = model.vlm.lm_head(hidden[counted]).argmax(-1) == targets[counted]
        return right.cpu(), counted.cpu()
    config = model.config
    batch = {name: value.to(device) for name, value in processor.collate_episodes(episodes).items()}
    output = model(**batch, teacher_forcing=teacher_forcing)
    if output.thought_logits is None:
        raise ValueError(
            f"the model returned no thought logits to score (upper_level={config.upper_level!r})"
        )
    right, counted = thought_word_positions(output.thought_logits, batch["thought_input_ids"], batch["step_mask"],
                                            config.eos_token_id, config.pad_token_id, free_running=not teacher_forcing)  # fmt: skip
    return right.cpu(), counted.cpu()


def thought_accuracy(
    model: ThoughtCloningModel,
    processor: ThoughtCloningProcessor,
    episodes: Iterable[Mapping[str, Any]],
    *,
    teacher_forcing: bool = True,
    batch_episodes: int = 4,
) -> dict[str, Any]:
    """Thought accuracy of ``model`` on ``episodes`` (dataset rows or ``Episode`` objects with ``mission``,
    ``images``, ``actions`` and ``thoughts``), ``batch_episodes`` whole episodes per forward pass.

    With ``teacher_forcing`` (the default) the upper level reads the demonstrator's previous thoughts and is
    scored on its greedy next token after each prefix of the demonstrator's thought; without, it reads its own
    previous thoughts and is scored on the greedy thought it writes (its eos included; every target position
    after its eos is wrong). A VLM upper level can be scored with teacher forcing only.

    Returns ``episodes``, ``steps``, ``thought_tokens`` (the target tokens counted, eos included),
    ``thought_token_accuracy``, ``whole_thought_accuracy`` (share of steps whose every target token is right),
    ``changed_steps`` (steps whose thought differs from the previous one, episode starts included),
    ``whole_thought_accuracy_changed`` (over those), ``copy_previous_accuracy`` (``1 - changed_steps / steps``,
    the score of repeating the previous thought) and ``teacher_forcing``.

    Raises ValueError for a model without a Thought Generator, a mode it cannot be scored in, no episodes, or a
    ``batch_episodes`` below 1.
    """
    check_scorable(model, teacher_forcing)
    if batch_episodes < 1:
        raise ValueError(f"batch_episodes must be at least 1, got {batch_episodes}")
    episodes = list(episodes)
    if not episodes:
        raise ValueError("no episodes to score")
    correct = counted_tokens = whole_right = steps = whole_right_changed = changed_count = 0
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(episodes), batch_episodes):
            chunk = episodes[start : start + batch_episodes]
            right, counted = step_matches(model, processor, chunk, teacher_forcing=teacher_forcing)
            changed = changed_steps(chunk)
            if changed.shape[0] != right.shape[0]:
                raise ValueError(
                    f"{right.shape[0]} scored steps for {changed.shape[0]} steps of the episodes"
                )
            whole = (right | ~counted).all(dim=1)
            correct += int(right.sum())
            counted_tokens += int(counted.sum())
            whole_right += int(whole.sum())
            steps += int(whole.numel())
            whole_right_changed += int(whole[changed].sum())
            changed_count += int(changed.sum())
    finally:
        model.train(was_training)
    return {
        "episodes": len(episodes),
        "steps": steps,
        "thought_tokens": counted_tokens,
        "thought_token_accuracy": correct / counted_tokens,
        "whole_thought_accuracy": whole_right / steps,
        "changed_steps": changed_count,
        "whole_thought_accuracy_changed": whole_right_changed / changed_count,
        "copy_previous_accuracy": 1 - changed_count / steps,
        "teacher_forcing": teacher_forcing,
    }


def load_episodes(dataset: str, config: str | None, split: str) -> tuple[str, list[dict[str, Any]]]:
    """(the level, the split's episodes) of a local dataset folder or Hub dataset; ``config`` None: the only
    one. Raises ValueError (a ``DatasetProblem``) naming what is missing, OSError when it cannot be read."""
    from ..training.data import DatasetProblem, check_columns, choose_level, load_split, split_names

    layout, level = choose_level(dataset, config, option="--config")
    splits = split_names(dataset, layout, level)
    if split not in splits:
        raise DatasetProblem(f"{dataset} has no {split!r} split for {level!r} (it has {splits})")
    rows = load_split(dataset, level, split)
    check_columns(rows.column_names, f"{dataset} [{split}]")
    return level, list(rows)


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module's docstring): prints the scores as JSON; 2 on bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m hf_thought_cloning.evaluation.thought_accuracy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="a model folder saved by train/run.py")
    parser.add_argument("--dataset", required=True, help="a thought dataset folder or Hub id")
    parser.add_argument("--config", default=None, help="the level (dataset config); default: the only one")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--batch-episodes", type=int, default=4, help="episodes per forward pass")
    parser.add_argument(
        "--no-teacher-forcing",
        dest="teacher_forcing",
        action="store_false",
        help="score the thoughts the upper level writes reading its own previous thoughts",
    )
    parser.add_argument("--output", default=None, help="also write the JSON to this file")
    args = parser.parse_args(argv)
    if args.batch_episodes < 1:
        parser.error(f"--batch-episodes must be at least 1, got {args.batch_episodes}")

    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 2

    try:
        model = ThoughtCloningModel.from_pretrained(args.model, trust_remote_code=False).eval()
    except (OSError, ValueError) as problem:
        return fail(f"cannot load the model {args.model!r}: {problem}")
    try:
        check_scorable(model, args.teacher_forcing)
    except ValueError as problem:
        return fail(f"{args.model}: {problem}")
    try:
        processor = ThoughtCloningProcessor.from_pretrained(args.model, trust_remote_code=False)
    except (OSError, ValueError) as problem:
        return fail(f"cannot load the processor of {args.model!r}: {problem}")
    try:
        level, episodes = load_episodes(args.dataset, args.config, args.split)
    except (OSError, ValueError) as problem:
        return fail(f"cannot load the dataset {args.dataset!r}: {problem}")
    try:
        scores = thought_accuracy(
            model,
            processor,
            episodes,
            teacher_forcing=args.teacher_forcing,
            batch_episodes=args.batch_episodes,
        )
    except ValueError as problem:
        return fail(str(problem))
    result = {"model": args.model, "dataset": args.dataset, "config": level, "split": args.split, **scores}
    if args.output is not None:
        from dataset_builder.files import atomic_write_json

        atomic_write_json(Path(args.output), result)  # a temporary file beside it, then renamed onto it
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
