"""Fine-tuning a VLM Thought Generator: the vision tower frozen by default, optional LoRA adapters (peft).

LoRA adapters are injected in place (``peft.inject_adapter_in_model``), so the model keeps its modules and a
checkpoint's weights keep their keys; a saved model folder holds the merged weights (see
``VLMThoughtGenerator.weights_for_saving``) and loads without peft.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

VISION_TOWER_NAMES = ("vision_tower", "vision_model", "visual")  # LLaVA, Idefics3 / SmolVLM, Qwen2-VL


def vision_tower(vlm: nn.Module) -> tuple[str, nn.Module]:
    """The (name, module) of an image-text-to-text model's vision encoder."""
    for name, module in vlm.named_modules():
        if name.rpartition(".")[2] in VISION_TOWER_NAMES:
            return name, module
    raise ValueError(
        f"cannot find the vision tower of {type(vlm).__name__} (looked for {VISION_TOWER_NAMES})"
    )


def prepare_vlm_for_training(vlm: nn.Module, lora_rank: int = 0, lora_alpha: float = 16.0,
                             train_vision_tower: bool = False, train_modules: Sequence[str] = ()) -> str:  # fmt: skip
    """Freeze the vision tower (unless ``train_vision_tower``); with ``lora_rank > 0`` train LoRA adapters on the
    linear layers (of the language model, and of the vision tower when it trains) instead of the VLM's weights.
    ``train_modules`` (names of the VLM's submodules) train in full, with no adapters and never frozen: for the
    freshly initialised parts of a VLM built around a pretrained language model (``vlm_backbones``).
    Returns a one-line description of what trains."""
    tower_name, tower = vision_tower(vlm)
    modules = dict(vlm.named_modules())
    unknown = [name for name in train_modules if not name or name not in modules]
    if unknown:
        raise ValueError(f"the VLM has no submodules {unknown} to train in full (its top-level modules: "
                         f"{[name for name, _ in vlm.named_children()]}; nested names use dots)")  # fmt: skip

    def in_trained_module(name: str) -> bool:
        return any(name == module or name.startswith(module + ".") for module in train_modules)

    full = f", in full: {', '.join(train_modules)}" if train_modules else ""
    if not lora_rank:
        if not train_vision_tower and not in_trained_module(tower_name):
            tower.requires_grad_(False)
        for name in train_modules:
            modules[name].requires_grad_(True)
        trained = sum(p.numel() for p in vlm.parameters() if p.requires_grad)
        frozen = "" if any(p.requires_grad for p in tower.parameters()) else ", vision tower frozen"
        return f"VLM fully fine-tuned ({trained:,} weights){frozen}{full}"
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise ValueError("LoRA needs peft: pip install 'hf-thought-cloning[vlm]'") from None
    targets = [
        name for name, module in vlm.named_modules()
        if isinstance(module, nn.Linear) and name != "lm_head" and not name.endswith(".lm_head")
        and (train_vision_tower or not (name == tower_name or name.startswith(tower_name + ".")))
        and not in_trained_module(name)
    ]  # fmt: skip
    inject_adapter_in_model(LoraConfig(r=lora_rank, lora_alpha=lora_alpha, target_modules=targets), vlm)
    adapters = sum(p.numel() for p in vlm.parameters() if p.requires_grad)
    for name in train_modules:
        modules[name].requires_grad_(True)
    in_full = sum(p.numel() for p in vlm.parameters() if p.requires_grad) - adapters
    full = f", {in_full:,} weights in full ({', '.join(train_modules)})" if train_modules else ""
    return f"VLM LoRA rank {lora_rank} on {len(targets)} linear layers ({adapters:,} adapter weights){full}"
