"""Thought Cloning (Hu & Clune, NeurIPS 2023) on the Hugging Face stack.

Importing the package registers the config, model, tokenizer and processor with the Auto classes, and
marks them for the remote-code route (``save_pretrained`` copies the module files and writes ``auto_map``).
"""

from transformers import AutoConfig, AutoModel, AutoProcessor, AutoTokenizer

from . import vocabulary
from .configuration_thought_cloning import ThoughtCloningConfig
from .modeling_thought_cloning import (
    ThoughtCloningActOutput,
    ThoughtCloningMemory,
    ThoughtCloningModel,
    ThoughtCloningOutput,
    ThoughtCloningPreTrainedModel,
)
from .processing_thought_cloning import ThoughtCloningProcessor
from .tokenization_thought_cloning import ThoughtCloningTokenizer

__all__ = [
    "ThoughtCloningActOutput",
    "ThoughtCloningConfig",
    "ThoughtCloningMemory",
    "ThoughtCloningModel",
    "ThoughtCloningOutput",
    "ThoughtCloningPreTrainedModel",
    "ThoughtCloningProcessor",
    "ThoughtCloningTokenizer",
    "vocabulary",
]

AutoConfig.register(ThoughtCloningConfig.model_type, ThoughtCloningConfig, exist_ok=True)
AutoModel.register(ThoughtCloningConfig, ThoughtCloningModel, exist_ok=True)
AutoTokenizer.register(ThoughtCloningConfig, fast_tokenizer_class=ThoughtCloningTokenizer, exist_ok=True)
AutoProcessor.register(ThoughtCloningConfig, ThoughtCloningProcessor, exist_ok=True)

ThoughtCloningConfig.register_for_auto_class()
ThoughtCloningModel.register_for_auto_class("AutoModel")
ThoughtCloningTokenizer.register_for_auto_class("AutoTokenizer")
ThoughtCloningProcessor.register_for_auto_class("AutoProcessor")
