"""Configuration of the Thought Cloning agent (Hu & Clune, NeurIPS 2023) and its upper-level variants.

Kept import-light and free of package-absolute imports: ``save_pretrained`` copies this file (and the
files it imports relatively) next to the weights for the ``trust_remote_code`` route.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PreTrainedConfig

from .vocabulary import BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, UNK_TOKEN, full_vocabulary

__all__ = ["THOUGHT_CHANNELS", "UPPER_LEVELS", "ThoughtCloningConfig"]

# "native": the paper's Thought Generator (BiGRU text encoders, LSTM thought decoder).
# "text_encoder": the native generator, but a pretrained AutoModel encoder reads missions and thoughts.
# "vlm": an image-text-to-text model (LLaVA family) writes the thoughts from a rendering of the view.
# "none": no upper level, the lower level reads the mission only (the paper's BC baseline).
UPPER_LEVELS = ("native", "text_encoder", "vlm", "none")

# How the generated thought reaches the lower level and the next step's thought history.
# "words": the greedy words, re-embedded (the paper's TC; no gradient flows back through them).
# "soft_words": a differentiable sequence, each decoded position's expected word embedding
#     softmax(logits / soft_thought_temperature) @ word_embedding.weight (native upper level only).
THOUGHT_CHANNELS = ("words", "soft_words")


def _as_sub_config(value: PreTrainedConfig | dict | None) -> PreTrainedConfig | None:
    if value is None or isinstance(value, PreTrainedConfig):
        return value
    if "model_type" not in value:
        raise ValueError("a sub-config given as a dict needs its 'model_type' (e.g. 'bert')")
    settings = dict(value)
    return AutoConfig.for_model(settings.pop("model_type"), **settings)


class ThoughtCloningConfig(PreTrainedConfig):
    r"""Configuration of [`ThoughtCloningModel`]. The defaults are the paper's (about 80M parameters).

    Args:
        vocabulary (`list[str]`, *optional*): the word vocabulary, in id order (defaults to
            ``vocabulary.full_vocabulary()``: `<pad>`, `<bos>`, `<eos>`, `<unk>`, mission words, thought words).
        image_dim (`int`, defaults to 128): channels of the visual feature map.
        text_dim (`int`, defaults to 256): word embedding size and per-token text feature size (BiGRU 2 x 128).
        memory_dim (`int`, defaults to 2048): hidden size of the upper, history, lower and decoder LSTMs.
        max_cell_value (`int`, defaults to 147): values per image channel of the bag-of-words cell embedding.
        num_actions (`int`, defaults to 7): BabyAI's action count.
        actor_hidden_dim (`int`, defaults to 64): hidden size of the actor MLP.
        num_attention_heads (`int`, defaults to 4): heads of the upper level's mission cross-attention blocks.
        num_cross_attention_blocks (`int`, defaults to 2): cross-attention blocks of the upper level.
        max_thought_length (`int`, defaults to 15): greedy decoding budget in words (eos excluded).
        upper_level (`str`, defaults to "native"): one of ``UPPER_LEVELS``; "none" is the BC baseline.
        thought_loss_weight (`float`, defaults to 2.0): weight of the thought NLL.
        thought_channel (`str`, defaults to "words"): one of ``THOUGHT_CHANNELS``: what the lower level and
            the next step's thought history read of a generated thought: its greedy words, or ("soft_words")
            the expected word embedding of each decoded position, so the action loss trains the upper level.
            "soft_words" needs the native upper level, and training with teacher forcing off. See
            [`ThoughtCloningConfig.no_thought_supervision`].
        soft_thought_temperature (`float`, defaults to 1.0): softmax temperature of the "soft_words" channel.
        entropy_coef (`float`, defaults to 0.01): coefficient of the action-entropy bonus.
        text_encoder_config (`PreTrainedConfig` or `dict`, *optional*): the pretrained encoder's config
            (``upper_level="text_encoder"``); the encoder is built with ``AutoModel.from_config``.
        text_encoder_trainable (`bool`, defaults to False): fine-tune the encoder (else frozen, no-grad).
        text_encoder_word_pieces (`list[list[int]]`, *optional*): for each vocabulary word, its ids in the
            encoder's tokenizer; with ``text_encoder_special_ids`` (cls, sep, pad) it lets the model re-tokenize
            word ids (including its own generated thoughts) without holding a tokenizer. Built by
            [`ThoughtCloningConfig.with_text_encoder`].
        vlm_config (`PreTrainedConfig` or `dict`, *optional*): config of an image-text-to-text model that writes
            the thoughts (``upper_level="vlm"``), built with ``AutoModelForImageTextToText.from_config``.
        vlm_max_new_tokens (`int`, defaults to 24): greedy decoding budget of the VLM's thoughts, in its tokens.
    """

    model_type = "thought_cloning"
    sub_configs = {"text_encoder_config": AutoConfig, "vlm_config": AutoConfig}

    def __init__(
        self,
        vocabulary: list[str] | None = None,
        image_dim: int = 128,
        text_dim: int = 256,
        memory_dim: int = 2048,
        max_cell_value: int = 147,
        num_actions: int = 7,
        actor_hidden_dim: int = 64,
        num_attention_heads: int = 4,
        num_cross_attention_blocks: int = 2,
        max_thought_length: int = 15,
        upper_level: str = "native",
        thought_loss_weight: float = 2.0,
        thought_channel: str = "words",
        soft_thought_temperature: float = 1.0,
        entropy_coef: float = 0.01,
        text_encoder_config: PreTrainedConfig | dict | None = None,
        text_encoder_trainable: bool = False,
        text_encoder_word_pieces: list[list[int]] | None = None,
        text_encoder_special_ids: list[int] | None = None,
        vlm_config: PreTrainedConfig | dict | None = None,
        vlm_max_new_tokens: int = 24,
        initializer_range: float = 0.02,
        **kwargs: Any,
    ):
        self.vocabulary = list(vocabulary) if vocabulary is not None else list(full_vocabulary())
        for position, token in enumerate((PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)):
            if self.vocabulary[position] != token:
                raise ValueError(f"vocabulary[{position}] must be {token!r}, got {self.vocabulary[position]!r}")
        if upper_level not in UPPER_LEVELS:
            raise ValueError(f"upper_level must be one of {UPPER_LEVELS}, got {upper_level!r}")
        if thought_channel not in THOUGHT_CHANNELS:
            raise ValueError(f"thought_channel must be one of {THOUGHT_CHANNELS}, got {thought_channel!r}")
        if soft_thought_temperature <= 0:
            raise ValueError(f"soft_thought_temperature must be positive, got {soft_thought_temperature}")
        if text_dim % 2:
            raise ValueError(f"text_dim must be even (a bidirectional GRU of text_dim // 2), got {text_dim}")
        self.image_dim = image_dim
        self.text_dim = text_dim
        self.memory_dim = memory_dim
        self.max_cell_value = max_cell_value
        self.num_actions = num_actions
        self.actor_hidden_dim = actor_hidden_dim
        self.num_attention_heads = num_attention_heads
        self.num_cross_attention_blocks = num_cross_attention_blocks
        self.max_thought_length = max_thought_length
        self.upper_level = upper_level
        self.thought_loss_weight = thought_loss_weight
        self.thought_channel = thought_channel
        self.soft_thought_temperature = soft_thought_temperature
        self.check_thought_channel()
        self.entropy_coef = entropy_coef
        self.text_encoder_config = _as_sub_config(text_encoder_config)
        self.text_encoder_trainable = text_encoder_trainable
        self.text_encoder_word_pieces = text_encoder_word_pieces
        self.text_encoder_special_ids = text_encoder_special_ids
        self.vlm_config = _as_sub_config(vlm_config)
        self.vlm_max_new_tokens = vlm_max_new_tokens
        self.initializer_range = initializer_range
        if upper_level == "text_encoder" and (
            self.text_encoder_config is None or text_encoder_word_pieces is None or text_encoder_special_ids is None
        ):
            raise ValueError(
                "upper_level='text_encoder' needs text_encoder_config, text_encoder_word_pieces and "
                "text_encoder_special_ids: build the config with ThoughtCloningConfig.with_text_encoder(path_or_name)"
            )
        if upper_level == "vlm" and self.vlm_config is None:
            raise ValueError("upper_level='vlm' needs vlm_config (an image-text-to-text model's config)")
        kwargs.setdefault("pad_token_id", 0)
        kwargs.setdefault("bos_token_id", 1)
        kwargs.setdefault("eos_token_id", 2)
        super().__init__(**kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    @property
    def unk_token_id(self) -> int:
        return 3

    @property
    def has_thought_generator(self) -> bool:
        """False for the BC baseline, which has no upper level."""
        return self.upper_level != "none"

    def check_thought_channel(self) -> None:
        """Raise ValueError when ``thought_channel`` does not fit ``upper_level`` (also run by the model)."""
        if self.thought_channel == "soft_words" and self.upper_level != "native":
            reasons = {
                "text_encoder": "a pretrained text encoder reads word pieces, not word embeddings",
                "vlm": "a VLM upper level writes text",
                "none": "the BC baseline has no thoughts",
            }
            raise ValueError(
                f"thought_channel='soft_words' needs upper_level='native' ({reasons[self.upper_level]}); "
                f"got upper_level={self.upper_level!r}"
            )

    @classmethod
    def behavioral_cloning(cls, **kwargs: Any) -> ThoughtCloningConfig:
        """The paper's BC baseline: the lower level conditioned on the mission only."""
        return cls(upper_level="none", thought_loss_weight=0.0, **kwargs)

    @classmethod
    def no_thought_supervision(cls, **kwargs: Any) -> ThoughtCloningConfig:
        """The paper's ablation "TC architecture trained without thought supervision" ("BC that can think in
        latent vectors"): thought loss weight 0, and the lower level reads the upper level's thoughts as soft
        words, so the action loss alone trains the upper level. Train it with ``teacher_forcing=False`` (the
        model refuses teacher forcing: the ablation never reads the demonstrator's thoughts)."""
        return cls(thought_loss_weight=0.0, thought_channel="soft_words", **kwargs)

    @classmethod
    def with_text_encoder(
        cls, encoder_name_or_path: str, trainable: bool = False, **kwargs: Any
    ) -> ThoughtCloningConfig:
        """A config whose missions and thoughts are read by the pretrained encoder at ``encoder_name_or_path``.

        Loads only the encoder's config and tokenizer (to map every vocabulary word to its word pieces);
        load the weights afterwards with ``ThoughtCloningModel.load_text_encoder_weights``.
        """
        from transformers import AutoTokenizer

        encoder_config = AutoConfig.from_pretrained(encoder_name_or_path)
        encoder_tokenizer = AutoTokenizer.from_pretrained(encoder_name_or_path)
        vocabulary = kwargs.pop("vocabulary", None) or list(full_vocabulary())
        return cls(
            vocabulary=vocabulary,
            upper_level="text_encoder",
            text_encoder_config=encoder_config,
            text_encoder_trainable=trainable,
            **word_pieces_for(vocabulary, encoder_tokenizer),
            **kwargs,
        )


def word_pieces_for(vocabulary: list[str], encoder_tokenizer: Any) -> dict[str, Any]:
    """``text_encoder_word_pieces`` and ``text_encoder_special_ids`` for ``encoder_tokenizer``.

    Special words (<pad>, <bos>, <eos>, <unk>) map to no piece: they carry no text.
    """
    specials = {PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN}
    pieces = [
        [] if word in specials else encoder_tokenizer(word, add_special_tokens=False)["input_ids"]
        for word in vocabulary
    ]
    cls_id = encoder_tokenizer.cls_token_id if encoder_tokenizer.cls_token_id is not None else encoder_tokenizer.bos_token_id
    sep_id = encoder_tokenizer.sep_token_id if encoder_tokenizer.sep_token_id is not None else encoder_tokenizer.eos_token_id
    pad_id = encoder_tokenizer.pad_token_id if encoder_tokenizer.pad_token_id is not None else 0
    if cls_id is None or sep_id is None:
        raise ValueError("the encoder tokenizer needs cls/sep (or bos/eos) tokens to frame its inputs")
    return {"text_encoder_word_pieces": pieces, "text_encoder_special_ids": [cls_id, sep_id, pad_id]}
