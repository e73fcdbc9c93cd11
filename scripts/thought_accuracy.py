"""Teacher-forced thought accuracy of a trained agent on a dataset split, for any upper level that writes thoughts.

Each step gets the demonstrator's view, mission and previous thought; the Thought Generator's greedy next token at
every position of the demonstrator's thought is compared with it. Reported: token accuracy (in the upper level's
own tokens: our words for the paper's upper level, the VLM tokenizer's pieces for a VLM; the end-of-thought
token included) and the share of steps whose whole thought is right, which does not depend on the tokenizer:
over all steps, and over the steps whose thought differs from the previous one (copying the previous thought
scores on the others).

    python scripts/thought_accuracy.py --model RUN/model --dataset DATA_FOLDER --split validation
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from datasets import load_dataset

from hf_thought_cloning import ThoughtCloningModel, ThoughtCloningProcessor
from hf_thought_cloning.modeling_thought_cloning import thought_targets, trim_padding
from hf_thought_cloning.upper_levels_thought_cloning import IGNORE_INDEX


@torch.no_grad()
def step_matches(
    model: ThoughtCloningModel, processor: ThoughtCloningProcessor, episodes: list[dict]
) -> tuple:
    """(correct tokens, counted tokens, steps whose thought is wholly right, steps) over ``episodes``."""
    if model.vlm_prompter is not None:
        inputs = model.vlm_prompter.training_inputs(episodes)
        model_inputs = {name[4:]: value for name, value in inputs.items() if name != "vlm_labels"}
        hidden = model.vlm.model(**model_inputs).last_hidden_state[:, :-1]
        targets = inputs["vlm_labels"][:, 1:]
        right = model.vlm.lm_head(hidden).argmax(-1) == targets
    else:
        batch = processor.collate_episodes(episodes)
        logits = model(**batch, teacher_forcing=True).thought_logits
        ids = batch["thought_input_ids"]
        ids = trim_padding(ids.flatten(0, 1), model.config.pad_token_id).unflatten(0, ids.shape[:2])
        targets = thought_targets(ids, model.config.eos_token_id, model.config.pad_token_id)[
            batch["step_mask"]
        ]
        words = logits[batch["step_mask"]].argmax(-1)[:, : targets.shape[1]]
        words = torch.nn.functional.pad(words, (0, targets.shape[1] - words.shape[1]), value=-1)
        right = words == targets
    counted = targets != IGNORE_INDEX
    whole = (right | ~counted).all(dim=1)
    # Steps in (episode, step) order, as both paths above lay them out.
    changed = torch.tensor([t == 0 or thoughts[t] != thoughts[t - 1]
                            for thoughts in (list(e["thoughts"]) for e in episodes) for t in range(len(thoughts))])  # fmt: skip
    return (int(right[counted].sum()), int(counted.sum()), int(whole.sum()), int(whole.numel()),
            int(whole[changed].sum()), int(changed.sum()))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="a model folder saved by train/run.py")
    parser.add_argument("--dataset", required=True, help="a thought dataset folder or Hub id")
    parser.add_argument("--config", default=None, help="the level (dataset config); default: the only one")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--batch-episodes", type=int, default=4)
    args = parser.parse_args(argv)
    model = ThoughtCloningModel.from_pretrained(args.model, trust_remote_code=False).eval()
    if not model.config.has_thought_generator:
        print(
            f"error: {args.model} has no Thought Generator (upper_level={model.config.upper_level!r})",
            file=sys.stderr,
        )
        return 2
    processor = ThoughtCloningProcessor.from_pretrained(args.model, trust_remote_code=False)
    episodes = list(load_dataset(args.dataset, args.config, split=args.split))
    totals = [0] * 6
    for start in range(0, len(episodes), args.batch_episodes):
        counts = step_matches(model, processor, episodes[start : start + args.batch_episodes])
        totals = [total + count for total, count in zip(totals, counts, strict=True)]
    correct, counted, whole, steps, whole_changed, changed = totals
    print(json.dumps({"model": args.model, "split": args.split, "episodes": len(episodes), "steps": steps,
                      "thought_token_accuracy": correct / counted, "whole_thought_accuracy": whole / steps,
                      "changed_steps": changed, "whole_thought_accuracy_changed": whole_changed / max(1, changed),
                      "copy_previous_accuracy": 1 - changed / steps}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
