"""Fine-tuning a VLM Thought Generator: the vision tower frozen by default, optional LoRA adapters (peft).

LoRA adapters are injected in place (``peft.inject_adapter_in_model``), so the model keeps its modules and a
checkpoint's weights keep their keys; a saved model folder holds the merged weights (see
``VLMThoughtGenerator.weights_for_saving``) and loads without peft.
"""

from __future__ import annotations

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
                             train_vision_tower: bool = False) -> str:  # fmt: skip
    """Freeze the vision tower (unless ``train_vision_tower``); with ``lora_rank > 0`` train LoRA adapters on the
    linear layers (of the language model, and of the vision tower when it trains) instead of the VLM's weights.
    Returns a one-line description of what trains."""
    tower_name, tower = vision_tower(vlm)
    if not lora_rank:
        if not train_vision_tower:
            tower.requires_grad_(False)
        trained = sum(p.numel() for p in vlm.parameters() if p.requires_grad)
        return f"VLM fully fine-tuned ({trained:,} weights){'' if train_vision_tower else ', vision tower frozen'}"
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise ValueError("LoRA needs peft: pip install 'hf-thought-cloning[vlm]'") from None
    targets = [
        name for name, module in vlm.named_modules()
        if isinstance(module, nn.Linear) and name != "lm_head" and not name.endswith(".lm_head")
        and (train_vision_tower or not (name == tower_name or name.startswith(tower_name + ".")))
    ]  # fmt: skip
    inject_adapter_in_model(LoraConfig(r=lora_rank, lora_alpha=lora_alpha, target_modules=targets), vlm)
    trained = sum(p.numel() for p in vlm.parameters() if p.requires_grad)
    return f"VLM LoRA rank {lora_rank} on {len(targets)} linear layers ({trained:,} adapter weights)"
