"""A vision-language model as the Thought Generator (tiny random LLaVA / Idefics3 / Qwen2-VL, offline)."""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import TINY, steer_first_row
from tiny_vlms import FAMILIES, save_tiny_vlm
from transformers import AutoModel

from dataset_builder.episodes import make_env, reset_quietly, run_episode
from hf_thought_cloning import (
    ThoughtCloningConfig,
    ThoughtCloningModel,
    ThoughtCloningProcessor,
    ThoughtCloningTokenizer,
)

LEVEL = "BabyAI-GoToLocal-v0"


@functools.cache
def episodes() -> list:
    env = make_env(LEVEL)
    return [run_episode(env, LEVEL, seed) for seed in (0, 1, 2)]


@functools.cache
def processor() -> ThoughtCloningProcessor:
    return ThoughtCloningProcessor(ThoughtCloningTokenizer())


@functools.cache
def pretrained(family: str, root: str) -> str:
    return str(save_tiny_vlm(__import__("pathlib").Path(root) / family, family))


@pytest.fixture(scope="module")
def vlm_root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("tiny-vlms"))


def tiny_vlm_agent(vlm_root: str, family: str = "llava", seed: int = 0, **settings) -> ThoughtCloningModel:
    torch.manual_seed(seed)
    return ThoughtCloningModel.from_vlm(pretrained(family, vlm_root), settings, vlm_max_new_tokens=4, **TINY)


def training_batch(model: ThoughtCloningModel) -> dict:
    return {**processor().collate_episodes(episodes()), **model.vlm_prompter.training_inputs(episodes())}


def observations(count: int = 2) -> dict:
    env = make_env(LEVEL)
    return processor()([reset_quietly(env, seed)[0] for seed in range(count)])


def test_prompter_renders_views_and_masks_prompts(vlm_root):
    prompter = tiny_vlm_agent(vlm_root).vlm_prompter
    inputs = prompter.training_inputs(episodes())
    steps = sum(e.num_steps for e in episodes())
    assert inputs["vlm_pixel_values"].shape == (steps, 3, 28, 28)
    assert inputs["vlm_input_ids"].shape[0] == inputs["vlm_labels"].shape[0] == steps
    first = inputs["vlm_labels"][0]
    target = first[first != -100].tolist()
    tokenizer = prompter.tokenizer
    assert target == tokenizer(episodes()[0].thoughts[0], add_special_tokens=False)["input_ids"] + [
        tokenizer.eos_token_id
    ]
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    assert (inputs["vlm_input_ids"][:, :4] == image_token).all() and (
        inputs["vlm_input_ids"][:, 4] != image_token
    ).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_lays_out_its_image_tokens(vlm_root, family):
    model = tiny_vlm_agent(vlm_root, family)
    batch = training_batch(model)
    extras = {"llava": set(), "idefics3": {"vlm_pixel_attention_mask"}, "qwen2_vl": {"vlm_image_grid_thw",
                                                                                     "vlm_mm_token_type_ids"}}  # fmt: skip
    assert {key for key in batch if key.startswith("vlm_")} == {"vlm_input_ids", "vlm_attention_mask", "vlm_pixel_values",
                                                                  "vlm_labels", *extras[family]}  # fmt: skip
    output = model(**batch)
    assert output.thought_loss > 0 and output.thought_logits is None
    acted = model.act(observations(), sample=False)
    assert len(acted.thoughts) == 2


def test_vlm_upper_level_trains_teacher_forced(vlm_root):
    model = tiny_vlm_agent(vlm_root)
    batch = training_batch(model)
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


def test_teacher_forcing_off_reads_the_vlms_own_thoughts_as_rollouts_do(vlm_root):
    model = tiny_vlm_agent(vlm_root, "qwen2_vl").eval()
    window = next(processor().windows(processor().collate_episodes(episodes()), 3))
    inputs = model.vlm_prompter.window_inputs(window, 0, 3, model.ids_to_text)
    with torch.no_grad():
        output = model(**window, **inputs, teacher_forcing=False)
    assert output.thought_loss > 0  # the VLM's NLL stays teacher-forced
    memory = None
    for t in range(3):
        step = {"images": window["images"][:, t], "mission_input_ids": window["mission_input_ids"]}
        acted = model.act(step, memory, sample=False)
        memory = acted.memory
        assert acted.thoughts == model.ids_to_text(output.generated_thought_ids[:, t])
        torch.testing.assert_close(acted.action_logits, output.action_logits[:, t], rtol=1e-4, atol=1e-5)


def test_forward_refuses_missing_or_mismatched_vlm_inputs(vlm_root):
    model = tiny_vlm_agent(vlm_root)
    collated = processor().collate_episodes(episodes())
    whole = model.vlm_prompter.training_inputs(episodes())
    with pytest.raises(ValueError, match="learns its thoughts from its vlm_\\* inputs"):
        model(**collated)
    window = next(processor().windows(collated, 3))
    with pytest.raises(ValueError, match=r"prompts, but these sequences have \d+ valid steps"):
        model(**window, **whole)  # the whole episodes' prompts for a 3-step window
    with pytest.raises(ValueError, match=r"incomplete vlm_\* inputs: \['vlm_labels'\] missing"):
        model(**collated, **{k: v for k, v in whole.items() if k != "vlm_labels"})
    model(**window, **model.vlm_prompter.window_inputs(window, 0, 3, model.ids_to_text))  # what fits is taken
    with pytest.raises(TypeError, match="unexpected keyword"):
        model(**collated, **whole, pixel_values=whole["vlm_pixel_values"])
    native = ThoughtCloningModel(ThoughtCloningConfig(**TINY))
    with pytest.raises(ValueError, match="vlm_\\* inputs are for a VLM upper level"):
        native(**collated, **whole)


def test_words_outside_our_vocabulary_reach_the_lower_level_as_unk(vlm_root):
    """The VLM writes "go Mission" ("Mission" is a word of its tokenizer, not of ours): the lower level reads
    ["go", "<unk>"]."""
    model = tiny_vlm_agent(vlm_root).eval()
    tokenizer = model.vlm_prompter.tokenizer
    script = iter(tokenizer.convert_tokens_to_ids(["go", "Mission", "<eos>", "<eos>"]))

    def write_the_script(module, args, logits):
        forced = torch.full_like(logits, -1e4)
        forced[..., next(script)] = 1e4
        return forced

    hook = model.vlm.lm_head.register_forward_hook(write_the_script)
    read = []
    reader = model.thought_encoder.register_forward_hook(lambda module, args, out: read.append(args[0]))
    acted = model.act(observations(1), sample=False)
    hook.remove()
    reader.remove()
    go, unk = model.text_to_ids(["go"])[0, 0], model.config.unk_token_id
    assert acted.thought_ids.tolist() == [[go, unk]] and acted.thoughts == ["go <unk>"]
    torch.testing.assert_close(read[-1][0], model.word_embedding(torch.tensor([go, unk])))


def test_steering_a_vlm_agent_changes_what_its_lower_level_reads_and_does(vlm_root):
    model = tiny_vlm_agent(vlm_root).eval()
    inputs = observations()
    generated, steered, _ = steer_first_row(model, inputs, model.initial_memory(2))
    torch.testing.assert_close(steered.action_logits[1], generated.action_logits[1])
    assert torch.equal(steered.memory.previous_thought_ids[0, :4], model.text_to_ids(["go to red ball"])[0])


def test_vlm_agent_save_load_is_exact_and_rebuilds_its_prompter(vlm_root, tmp_path):
    model = tiny_vlm_agent(vlm_root, "idefics3", use_chat_template=True).eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path, trust_remote_code=False).eval()
    parameters, loaded_parameters = dict(model.named_parameters()), dict(loaded.named_parameters())
    assert parameters.keys() == loaded_parameters.keys()
    assert all(torch.equal(p, loaded_parameters[name]) for name, p in parameters.items())
    assert loaded.vlm_prompter.settings() == model.vlm_prompter.settings()
    assert loaded.vlm_prompter.prompt_text("go to the red ball", "") == model.vlm_prompter.prompt_text(
        "go to the red ball", ""
    )
    batch = training_batch(model)
    assert all(torch.equal(value, training_batch(loaded)[key]) for key, value in batch.items())
    with torch.no_grad():
        expected, actual = model(**batch), loaded(**batch)
    assert torch.equal(expected.action_logits, actual.action_logits)
    assert torch.equal(expected.thought_loss, actual.thought_loss)
    assert (
        loaded.act(observations(), sample=False).thoughts == model.act(observations(), sample=False).thoughts
    )


def test_a_vlm_agent_without_a_prompter_says_how_to_get_one(vlm_root):
    model = tiny_vlm_agent(vlm_root)
    model.vlm_prompter = None
    with pytest.raises(
        ValueError, match="has none: load the model from a folder saved with its vlm_prompter/"
    ):
        model.act(observations())
    with pytest.raises(ValueError, match="only a VLM upper level has a prompter"):
        ThoughtCloningModel(ThoughtCloningConfig(**TINY)).vlm_prompter = object()
