"""Jinja templates of the model cards (rendered by ``hf_thought_cloning.model_card``)."""

from pathlib import Path

TEMPLATE_DIR = Path(__file__).parent
THOUGHT_CLONING_TEMPLATE = TEMPLATE_DIR / "thought_cloning.md"

__all__ = ["TEMPLATE_DIR", "THOUGHT_CLONING_TEMPLATE"]
