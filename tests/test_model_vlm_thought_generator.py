"""A vision-language model as the Thought Generator: a tiny random LLaVA (CLIP vision + Llama) offline."""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import TINY
from tokenizers import Tokenizer, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import AutoModel, CLIPVisionConfig, LlamaConfig, LlavaConfig, PreTrainedTokenizerFast

from dataset_builder.episodes import make_env, run_episode
from hf_thought_cloning import (
    ThoughtCloningConfig,
    ThoughtCloningModel,
    ThoughtCloningProcessor,
    ThoughtCloningTokenizer,
)
from hf_thought_cloning.processing_thought_cloning import VLMThoughtPrompter
from hf_thought_cloning.vocabulary import full_vocabulary

LEVEL = "BabyAI-GoToLocal-v0"


@functools.cache
def episodes() -> list:
    env = make_env(LEVEL)
    return [run_episode(env, LEVEL, seed) for seed in (0, 1, 2)]


@functools.cache
def vlm_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level stand-in for a VLM's own tokenizer: our words, the prompt's words and an image token."""
    words = [*full_vocabulary(), "Mission", "Previous", "Thought", ":", "<image>"]
    backend = Tokenizer(WordLevel({word: i for i, word in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(",", behavior="isolated")]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )


def tiny_llava_config() -> LlavaConfig:
    tokenizer = vlm_tokenizer()
    return LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
            projection_dim=16,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=4,  # (28 / 14)^2 patches, the CLS feature dropped
    )


def tiny_vlm_agent(seed: int = 0) -> tuple[ThoughtCloningModel, VLMThoughtPrompter]:
    torch.manual_seed(seed)
    config = ThoughtCloningConfig(
        upper_level="vlm", vlm_config=tiny_llava_config(), vlm_max_new_tokens=8, **TINY
    )
    model = ThoughtCloningModel(config)
    return model, VLMThoughtPrompter.for_llava(vlm_tokenizer(), config.vlm_config)


def training_batch(prompter: VLMThoughtPrompter) -> dict:
    processor = ThoughtCloningProcessor(ThoughtCloningTokenizer())
    return {**processor.collate_episodes(episodes()), **prompter.training_inputs(episodes())}


def test_prompter_renders_views_and_masks_prompts():
    _, prompter = tiny_vlm_agent()
    inputs = prompter.training_inputs(episodes())
    steps = sum(e.num_steps for e in episodes())
    assert inputs["vlm_pixel_values"].shape == (steps, 3, 28, 28)
    assert inputs["vlm_input_ids"].shape[0] == steps
    first = inputs["vlm_labels"][0]
    target = first[first != -100].tolist()
    expected = vlm_tokenizer()(episodes()[0].thoughts[0], add_special_tokens=False)["input_ids"] + [2]
    assert target == expected
    assert (inputs["vlm_input_ids"][:, :4] == prompter.image_token_id).all()


def test_vlm_upper_level_trains_teacher_forced():
    model, prompter = tiny_vlm_agent()
    batch = training_batch(prompter)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        output = model(**batch)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(output.thought_loss.item())
    assert losses[-1] < 0.5 * losses[0]
    # The thought loss reaches the language model, the projector and the vision tower.
    assert model.vlm.model.language_model.embed_tokens.weight.grad is not None
    assert model.vlm.model.multi_modal_projector.linear_1.weight.grad is not None
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in model.vlm.model.vision_tower.parameters()
    )
    with pytest.raises(ValueError, match="teacher forcing"):
        model(**batch, teacher_forcing=False)


def test_vlm_writes_thoughts_in_rollouts_and_can_be_steered():
    model, prompter = tiny_vlm_agent()
    model.eval()
    processor = ThoughtCloningProcessor(ThoughtCloningTokenizer())
    env = make_env(LEVEL)
    observations = [env.reset(seed=seed)[0] for seed in (0, 1)]
    inputs = processor(observations)
    with pytest.raises(ValueError, match="vlm_prompter"):
        model.act(inputs)
    acted = model.act(inputs, vlm_prompter=prompter, sample=False)
    assert len(acted.thoughts) == 2 and acted.actions.shape == (2,)
    vocabulary = set(full_vocabulary())
    assert all(
        word in vocabulary for thought in acted.thoughts for word in thought.replace(",", " , ").split()
    )
    steered = model.act(
        inputs, acted.memory, thought=["go to red ball", None], vlm_prompter=prompter, sample=False
    )
    assert steered.thoughts[0] == "go to red ball"


def test_vlm_agent_save_load_is_exact(tmp_path):
    model, prompter = tiny_vlm_agent()
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path, trust_remote_code=False)
    parameters, loaded_parameters = dict(model.named_parameters()), dict(loaded.named_parameters())
    assert parameters.keys() == loaded_parameters.keys()
    assert all(torch.equal(p, loaded_parameters[name]) for name, p in parameters.items())
    batch = training_batch(prompter)
    with torch.no_grad():
        expected, actual = model.eval()(**batch), loaded.eval()(**batch)
    assert torch.equal(expected.action_logits, actual.action_logits)
    assert torch.equal(expected.thought_loss, actual.thought_loss)
