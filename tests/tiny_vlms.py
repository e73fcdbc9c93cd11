"""Tiny random vision-language models of each supported family, saved as a pretrained VLM folder is (config,
weights, tokenizer, image processor), so that ``train/run.py --vlm_model FOLDER`` and
``ThoughtCloningModel.from_vlm(FOLDER)`` load them exactly as they load a Hub checkpoint, offline.

The tokenizer is a word-level stand-in for the VLM's own: our words, the prompt's words and the family's image
tokens (added tokens, so they split out of text without spaces). Image processors are the PIL backends
(torchvision is not needed).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from hf_thought_cloning.vocabulary import full_vocabulary

FAMILIES = ("llava", "idefics3", "qwen2_vl")
PROMPT_WORDS = ("Mission", "Previous", "Thought", ":", "User", "Assistant")
# A minimal chat template (a user turn with an image, then the assistant's turn), as instruction-tuned VLMs have.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize }} :"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>{% else %} {{ part['text'] }}"
    "{% endif %}{% endfor %}{% endfor %}{% if add_generation_prompt %} Assistant :{% endif %}"
)


def word_tokenizer(special_tokens: list[str], chat_template: str | None = None) -> PreTrainedTokenizerFast:
    words = [*full_vocabulary(), *PROMPT_WORDS]
    backend = Tokenizer(WordLevel({word: i for i, word in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(",", behavior="isolated")]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": special_tokens})
    tokenizer.chat_template = chat_template
    return tokenizer


def _llama_text(vocab_size: int) -> dict:
    return dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, pad_token_id=0, bos_token_id=1, eos_token_id=2)  # fmt: skip


def build_tiny_vlm(family: str):
    """(model, tokenizer, image processor) of a tiny random VLM of ``family`` (seeded, so always the same)."""
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3VisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
    )

    torch.manual_seed(0)
    mean_std = {"image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    if family == "llava":
        tokenizer = word_tokenizer(["<image>"])
        config = LlavaConfig(
            vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                           num_attention_heads=2, image_size=28, patch_size=14, projection_dim=16),
            text_config=LlamaConfig(**_llama_text(len(tokenizer))),
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_seq_length=4,
        )  # fmt: skip
        image_processor = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                                **mean_std)  # fmt: skip
        return LlavaForConditionalGeneration(config), tokenizer, image_processor
    if family == "idefics3":
        specials = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
        tokenizer = word_tokenizer(specials, CHAT_TEMPLATE)
        config = Idefics3Config(
            vision_config=Idefics3VisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                               num_attention_heads=2, image_size=28, patch_size=14),
            text_config=LlamaConfig(**_llama_text(len(tokenizer))),
            image_token_id=tokenizer.convert_tokens_to_ids("<image>"), scale_factor=2, pad_token_id=0,
        )  # fmt: skip
        # Image splitting on, as SmolVLM ships: the prompter turns it off.
        image_processor = Idefics3ImageProcessorPil(do_image_splitting=True, size={"longest_edge": 56},
                                                    max_image_size={"longest_edge": 28}, **mean_std)  # fmt: skip
        return Idefics3ForConditionalGeneration(config), tokenizer, image_processor
    if family == "qwen2_vl":
        tokenizer = word_tokenizer(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"])
        ids = tokenizer.convert_tokens_to_ids
        config = Qwen2VLConfig(
            vision_config=dict(depth=1, embed_dim=16, hidden_size=32, num_heads=2, patch_size=14, spatial_merge_size=2,
                               temporal_patch_size=2),
            # transformers 5 needs mrope_section in the text config's rope parameters (sums to head_dim / 2).
            text_config=dict(_llama_text(len(tokenizer)), rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                                          "mrope_section": [2, 3, 3]}),
            image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
            vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
        )  # fmt: skip
        image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56, patch_size=14, merge_size=2,
                                                   temporal_patch_size=2, **mean_std)  # fmt: skip
        return Qwen2VLForConditionalGeneration(config), tokenizer, image_processor
    raise ValueError(f"unknown family {family!r} (one of {FAMILIES})")


def save_tiny_vlm(folder: Path, family: str) -> Path:
    """A pretrained-VLM folder of ``family``: what ``--vlm_model`` and ``from_vlm`` take."""
    model, tokenizer, image_processor = build_tiny_vlm(family)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    image_processor.save_pretrained(folder)
    return Path(folder)
