"""The model card (``README.md``) of a trained Thought Cloning model folder.

``render_model_card(folder, training, results)`` renders ``model_cards/thought_cloning.md`` with
``huggingface_hub.ModelCard.from_template`` and writes ``folder/README.md``; it also writes the ``training``
dict it was given to ``folder/training_summary.json``, so that ``update_card_results(folder, results)`` can
re-render the whole card later with new evaluation results (hand edits to the card's text are not kept;
metadata keys added to the card after rendering are).

``training`` (built by the trainer; JSON-serialisable) has these keys, all required except ``repo_id``:

* ``variant``: one of ``VARIANTS`` ("thought-cloning", "behavioral-cloning", "no-thought-supervision",
  "text-encoder-upper-level", "vlm-upper-level"; the trainer's short names "text-encoder" and "vlm" are
  accepted too); it must agree with ``config["upper_level"]`` and ``config["thought_loss_weight"]`` when
  they are given.
* ``num_parameters`` (int): the model's parameter count.
* ``config`` (dict): the model configuration (image_dim, text_dim, memory_dim, upper_level, ...); scalar
  entries are shown in a table, sub-configs by their model type and name.
* ``dataset`` (dict): ``path_or_id`` (a local folder or a Hub dataset id) and ``config`` (the level) are
  required; ``split``, ``train_episodes``, ``train_frames`` and ``validation_seeds`` (a list of seeds, or
  ``{"start": a, "stop": b}`` for the range a..b-1) are shown when present and not None (a two-item list is
  two seeds, not a range: the trainer validates on explicit seeds); ``hub_id`` (str or None) says which Hub
  dataset goes into the card's ``datasets`` metadata. Without ``hub_id``, ``path_or_id`` counts as a Hub id
  when it is not an existing path and looks like ``name`` or ``org/name``; the decision is stored in
  ``training_summary.json`` so a later re-render on another machine gives the same card.
* ``command`` (str): the exact command line of the training run.
* ``seed`` (int): the training seed.
* ``hyperparameters`` (dict): the training arguments, shown as a table in their order (values of keys that
  look like credentials, e.g. ``hub_token``, are redacted, as are such options in ``command``).
* ``metrics`` (dict): training metrics such as ``final_loss``, ``action_loss``, ``thought_loss``,
  ``action_accuracy``, ``thought_token_accuracy``, ``best_validation_success``, ``best_epoch``, ``frames``,
  ``epochs``, ``wall_time_s`` (any other key is shown under its own name; None values are left out; a list
  of dicts, such as a validation history, becomes a table of its own); may be empty.
* ``versions`` (dict): package name -> version.
* ``hardware`` (str): what it was trained on, e.g. "1x NVIDIA H100 80GB" or "2-core CPU".
* ``repo_id`` (str or None): the Hub model id, used in the usage snippet and as the ``model-index`` name.

Each result dict (from the evaluation) has ``task_type``, ``dataset_type`` (the level id),
``dataset_name``, ``metric_type``, ``metric_name`` and ``metric_value`` (a number); optionally
``dataset_split``, ``dataset_config``, ``dataset_revision``, ``dataset_args``, ``task_name``,
``metric_config``, ``metric_args``. They become ``huggingface_hub.EvalResult`` entries of the card's
``model-index`` and the rows of its Results table, whose episodes and step-limit columns come from
``metric_args`` (``episodes``; ``max_steps`` for a capped quick look, else the level's own limit).
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from dataset_builder.files import atomic_write_json, atomic_write_text
from hf_thought_cloning.vocabulary import SPECIAL_TOKENS, full_vocabulary
from model_cards import THOUGHT_CLONING_TEMPLATE

__all__ = ["SUMMARY_FILE", "VARIANTS", "render_model_card", "update_card_results"]

SUMMARY_FILE = "training_summary.json"
CARD_FILE = "README.md"

# variant -> (title, expected config upper_level, has thoughts, thoughts supervised, description)
VARIANTS: dict[str, tuple[str, str, bool, bool, str]] = {
    "thought-cloning": (
        "Thought Cloning agent",
        "native",
        True,
        True,
        "The paper's agent: both levels trained together by imitation, the actions cloned from the "
        "demonstrator's actions and the thoughts from its thoughts (the Thought Generator reads missions and "
        "thoughts with BiGRUs and writes thoughts with an LSTM decoder).",
    ),
    "behavioral-cloning": (
        "Behavioral Cloning baseline",
        "none",
        False,
        False,
        "The paper's Behavioral Cloning baseline: the Action Generator conditioned on the mission only, with "
        "no upper level and no thoughts, trained to imitate the demonstrator's actions.",
    ),
    "no-thought-supervision": (
        "Thought Cloning ablation without thought supervision",
        "native",
        True,
        False,
        "The paper's ablation: the Thought Cloning architecture trained with a thought loss weight of 0, so "
        'the upper level is shaped only by the action loss ("Behavioral Cloning that can think in latent '
        'vectors").',
    ),
    "text-encoder-upper-level": (
        "Thought Cloning agent with a pretrained text encoder",
        "text_encoder",
        True,
        True,
        "Thought Cloning with the BiGRU readers of missions and thoughts replaced by a pretrained text "
        "encoder{encoder}; everything else as in the paper's agent.",
    ),
    "vlm-upper-level": (
        "Thought Cloning agent with a vision-language Thought Generator",
        "vlm",
        True,
        True,
        "Thought Cloning with a vision-language model{vlm} as the Thought Generator: it sees a rendering of "
        "the agent's view, the mission and the previous thought and writes the next thought, which the "
        "Action Generator reads.",
    ),
}

# Short names used on the trainer's command line.
VARIANT_ALIASES = {"text-encoder": "text-encoder-upper-level", "vlm": "vlm-upper-level"}

REQUIRED_TRAINING_KEYS = (
    "variant", "num_parameters", "config", "dataset", "command", "seed", "hyperparameters", "metrics",
    "versions", "hardware",
)  # fmt: skip
REQUIRED_DATASET_KEYS = ("path_or_id", "config")
REQUIRED_RESULT_KEYS = (
    "task_type", "dataset_type", "dataset_name", "metric_type", "metric_name", "metric_value",
)  # fmt: skip
OPTIONAL_RESULT_KEYS = (
    "dataset_split", "dataset_config", "dataset_revision", "dataset_args", "task_name", "metric_config",
    "metric_args",
)  # fmt: skip

METRIC_LABELS = {
    "final_loss": "loss",
    "action_loss": "action loss (cross-entropy)",
    "thought_loss": "thought loss (NLL per thought)",
    "action_accuracy": "action accuracy",
    "thought_token_accuracy": "thought token accuracy",
    "best_validation_success": "best validation success rate",
    "best_epoch": "best epoch",
    "frames": "training frames",
    "epochs": "epochs",
    "wall_time_s": "wall time",
}
BASE_TAGS = ("thought-cloning", "babyai", "minigrid", "imitation-learning", "reinforcement-learning")
SECRET_KEY = re.compile(r"token|secret|password|api_?key", re.IGNORECASE)
SECRET_OPTION = re.compile(r"(--?[\w-]*(?:token|secret|password|api_?key)[\w-]*)([= ])(\S+)", re.IGNORECASE)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
PAPER_DEMONSTRATIONS = 1_000_000


# ------------------------------------------------------------------------------------------ checks
def _check_training(training: Any) -> None:
    if not isinstance(training, Mapping):
        raise ValueError(f"training must be a dict, got {type(training).__name__}")
    missing = [key for key in REQUIRED_TRAINING_KEYS if key not in training]
    if missing:
        raise ValueError(f"training lacks {missing}; a model card needs {list(REQUIRED_TRAINING_KEYS)}")
    variant = VARIANT_ALIASES.get(training["variant"], training["variant"])
    if variant not in VARIANTS:
        raise ValueError(f"training['variant'] must be one of {list(VARIANTS)}, got {variant!r}")
    for key, kind in (("config", Mapping), ("dataset", Mapping), ("hyperparameters", Mapping),
                      ("metrics", Mapping), ("versions", Mapping), ("command", str), ("hardware", str)):  # fmt: skip
        if not isinstance(training[key], kind):
            raise ValueError(f"training[{key!r}] must be a {'dict' if kind is Mapping else 'str'}")
    for key in ("num_parameters", "seed"):
        if isinstance(training[key], bool) or not isinstance(training[key], int):
            raise ValueError(f"training[{key!r}] must be an int, got {training[key]!r}")
    if training.get("repo_id") is not None and not isinstance(training["repo_id"], str):
        raise ValueError(f"training['repo_id'] must be a str or None, got {training['repo_id']!r}")
    missing = [key for key in REQUIRED_DATASET_KEYS if key not in training["dataset"]]
    if missing:
        raise ValueError(f"training['dataset'] lacks {missing}; it needs {list(REQUIRED_DATASET_KEYS)}")
    upper_level = training["config"].get("upper_level")
    expected = VARIANTS[variant][1]
    if upper_level is not None and upper_level != expected:
        raise ValueError(
            f"variant {variant!r} has upper_level={expected!r}, but training['config'] says {upper_level!r}"
        )
    weight = training["config"].get("thought_loss_weight")
    _, _, has_thoughts, supervised, _ = VARIANTS[variant]
    # BC has no upper level, so its thought weight means nothing; elsewhere it must match the variant.
    if has_thoughts and weight is not None and supervised != (weight > 0):
        raise ValueError(
            f"variant {variant!r} is trained {'with' if supervised else 'without'} thought supervision, but "
            f"training['config'] has thought_loss_weight={weight}"
        )
    try:
        json.dumps(training)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"training must be JSON-serialisable (it is stored in {SUMMARY_FILE}): {error}"
        ) from None


def _eval_results(results: list[dict]) -> list[EvalResult]:
    converted = []
    for index, result in enumerate(results):
        if not isinstance(result, Mapping):
            raise ValueError(f"result {index} must be a dict, got {type(result).__name__}")
        missing = [key for key in REQUIRED_RESULT_KEYS if key not in result]
        unknown = sorted(set(result) - set(REQUIRED_RESULT_KEYS) - set(OPTIONAL_RESULT_KEYS))
        if missing or unknown:
            raise ValueError(
                f"result {index}: missing {missing}, unknown {unknown}; results need {list(REQUIRED_RESULT_KEYS)}"
                f" and may have {list(OPTIONAL_RESULT_KEYS)}"
            )
        value = result["metric_value"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"result {index}: metric_value must be a finite number, got {value!r}")
        converted.append(EvalResult(**{**result, "metric_value": float(value)}))
    return converted


# ------------------------------------------------------------------------------------------ formatting
def _number(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _plain(value: Any) -> str:
    return str(value).replace("|", "\\|")


def _cell(value: Any, exact: bool = True) -> str:
    """A table cell: numbers (floats exact, or to 4 significant digits), strings in code, containers as
    JSON; pipes escaped so they do not split the cell."""
    if value is None:
        text = "None"
    elif isinstance(value, float) and exact:
        text = repr(value)  # hyper-parameters are shown exactly as given (5e-05, not 5e-5 rounded)
    elif isinstance(value, (bool, int, float)):
        text = _number(value)
    elif isinstance(value, str):
        text = f"`{value}`" if value else '`""`'
    else:
        text = f"`{json.dumps(value)}`"
    return text.replace("|", "\\|")


def _config_rows(config: Mapping[str, Any]) -> list[dict[str, str]]:
    rows = []
    for name, value in config.items():
        if isinstance(value, Mapping):
            # a sub-config (pretrained text encoder, VLM): its type and checkpoint, not its hundred fields
            described = " ".join(
                f"`{value[key]}`" for key in ("model_type", "_name_or_path") if value.get(key)
            )
            rows.append({"name": name, "value": described or f"({len(value)} settings)"})
        elif isinstance(value, (list, tuple)):
            rows.append({"name": name, "value": f"({len(value)} entries)"})
        else:
            rows.append({"name": name, "value": _cell(value)})
    return rows


def _seeds_text(seeds: Any) -> str:
    """``{"start", "stop"}`` as a range; a list as its runs of consecutive seeds (the first 6 runs)."""
    if isinstance(seeds, Mapping) and {"start", "stop"} <= set(seeds):
        start, stop = seeds["start"], seeds["stop"]
        return f"`{start}` to `{stop - 1}` ({stop - start:,} seeds)"
    if isinstance(seeds, (list, tuple)) and all(isinstance(seed, int) for seed in seeds):
        runs: list[list[int]] = []
        for seed in seeds:
            if runs and seed == runs[-1][1] + 1:
                runs[-1][1] = seed
            else:
                runs.append([seed, seed])
        shown = ", ".join(f"`{a}`" if a == b else f"`{a}` to `{b}`" for a, b in runs[:6])
        return f"{len(seeds):,} seeds: {shown}{', ...' if len(runs) > 6 else ''}"
    return _cell(seeds)


def _redact_command(command: str) -> str:
    return SECRET_OPTION.sub(lambda m: f"{m.group(1)}{m.group(2)}<redacted>", command)


def _history_tables(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Metrics that are lists of dicts (e.g. the validation history) as tables: columns from all entries."""
    tables = []
    for name, value in metrics.items():
        if isinstance(value, list) and value and all(isinstance(entry, Mapping) for entry in value):
            columns = list(dict.fromkeys(key for entry in value for key in entry))
            rows = [[_cell(entry.get(key), exact=False) for key in columns] for entry in value]
            tables.append({"key": name, "columns": columns, "rows": rows})
    return tables


def _metric_value(name: str, value: Any) -> str:
    if name == "wall_time_s" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return (
            f"{value:,.0f} s ({value / 3600:.2f} h)"
            if value >= 3600
            else f"{value:,.0f} s ({value / 60:.1f} min)"
        )
    return _cell(value, exact=False)


def _step_cap_text(metric_args: Mapping[str, Any] | None) -> str:
    """A result's step limit: the level's own, the cap of a ``--max-steps`` quick look, or unknown (blank) for a
    result that does not say how it was measured."""
    if not metric_args:
        return ""
    cap = metric_args.get("max_steps")
    return "level's own" if cap is None else f"{_plain(cap)} (quick look)"


def _sub_config_name(config: Mapping[str, Any], key: str) -> str | None:
    sub = config.get(key)
    return (sub.get("_name_or_path") or None) if isinstance(sub, Mapping) else None


def _resolve_dataset_hub_id(dataset: Mapping[str, Any]) -> str | None:
    if "hub_id" in dataset:
        return dataset["hub_id"]
    path_or_id = str(dataset["path_or_id"])
    if Path(path_or_id).expanduser().exists() or not HUB_ID.match(path_or_id):
        return None
    return path_or_id


# ------------------------------------------------------------------------------------------ rendering
def _build_card(folder: Path, training: Mapping[str, Any], results: list[dict] | None) -> ModelCard:
    variant = VARIANT_ALIASES.get(training["variant"], training["variant"])
    title, _, has_thoughts, supervised, description = VARIANTS[variant]
    config, dataset, metrics = training["config"], training["dataset"], training["metrics"]
    level = str(dataset["config"])
    repo_id = training.get("repo_id")
    model_name = repo_id.split("/")[-1] if repo_id else folder.resolve().name
    model_ref = repo_id or f"path/to/{folder.resolve().name}"
    hub_id = dataset.get("hub_id")

    encoder = _sub_config_name(config, "text_encoder_config")
    trainable = config.get("text_encoder_trainable")
    encoder_text = f" (`{encoder}`)" if encoder else ""
    if trainable is not None:
        encoder_text += ", fine-tuned with the agent" if trainable else ", kept frozen"
    vlm = _sub_config_name(config, "vlm_config")
    description = description.format(encoder=encoder_text, vlm=f" (`{vlm}`)" if vlm else "")

    eval_results = _eval_results(results) if results else None
    card_data = ModelCardData(
        library_name="transformers",
        license="apache-2.0",
        tags=[*BASE_TAGS, variant],
        datasets=[hub_id] if hub_id else None,
        model_name=model_name if eval_results else None,
        eval_results=eval_results,
    )

    dataset_rows = [{"name": "level (dataset config)", "value": f"`{level}`"}]
    for key, name, show in (
        ("split", "training split", _cell),
        ("train_episodes", "training episodes", _cell),
        ("train_frames", "training frames (steps)", _cell),
        ("validation_seeds", "online validation seeds", _seeds_text),
    ):
        if dataset.get(key) is not None:
            dataset_rows.append({"name": name, "value": show(dataset[key])})

    episodes = dataset.get("train_episodes")
    if isinstance(episodes, int) and episodes < PAPER_DEMONSTRATIONS:
        scale_note = (
            f"Small-scale training: {episodes:,} demonstrations, against the paper's 1M BossLevel "
            "demonstrations and about 7e8 training frames. Its numbers are not comparable to the paper's."
        )
    elif isinstance(episodes, int):
        scale_note = f"Trained on {episodes:,} demonstrations, the scale of the paper's 1M BossLevel ones."
    else:
        scale_note = (
            "The number of training demonstrations was not recorded; the paper used 1M BossLevel ones."
        )

    history_tables = _history_tables(metrics)
    vocabulary = config.get("vocabulary") or list(full_vocabulary())
    specials = sum(token in SPECIAL_TOKENS for token in vocabulary)

    result_rows = [
        {
            "level": _plain(result["dataset_type"]),
            "dataset": _plain(result["dataset_name"]),
            "split": _plain(result.get("dataset_split") or ""),
            "metric": _plain(result["metric_name"]),
            "value": _number(float(result["metric_value"])),
            "episodes": _plain((result.get("metric_args") or {}).get("episodes", "")),
            "step_cap": _step_cap_text(result.get("metric_args")),
        }
        for result in results or []
    ]

    return ModelCard.from_template(
        card_data,
        template_path=str(THOUGHT_CLONING_TEMPLATE),
        title=f"{title}: {level}",
        level=level,
        variant=variant,
        variant_description=description,
        has_thoughts=has_thoughts,
        thoughts_supervised=supervised,
        steerable=has_thoughts and supervised,
        num_parameters_text=f"{training['num_parameters']:,}",
        config_rows=_config_rows(config),
        model_ref=model_ref,
        dataset_hub_id=hub_id,
        dataset_path=str(dataset["path_or_id"]),
        dataset_rows=dataset_rows,
        command=_redact_command(training["command"]),
        seed=training["seed"],
        hardware=training["hardware"],
        hyperparameter_rows=[
            {"name": k, "value": "(redacted)" if SECRET_KEY.search(k) and v else _cell(v)}
            for k, v in training["hyperparameters"].items()
        ],  # also here: update_card_results renders summaries that may not come from render_model_card
        metric_rows=[
            {"name": METRIC_LABELS.get(k, k), "value": _metric_value(k, v)}
            for k, v in metrics.items()
            if v is not None and k not in {table["key"] for table in history_tables}
        ],
        history_tables=history_tables,
        versions=training["versions"],
        result_rows=result_rows,
        scale_note=scale_note,
        vocabulary_size=len(vocabulary),
        vocabulary_words=len(vocabulary) - specials,
        vocabulary_special=specials,
    )


def render_model_card(folder: str | Path, training: dict, results: list[dict] | None = None) -> ModelCard:
    """Render the card of the model in ``folder`` and write ``folder/README.md``; returns the card.

    Also writes ``training`` (with the dataset's Hub id decided) to ``folder/training_summary.json`` for
    ``update_card_results``. ``results`` (evaluation results, see the module docstring) fill the card's
    ``model-index`` and Results section; without them the card says how to run the evaluation.

    Raises:
        ValueError: ``training`` lacks a required key, has a value of the wrong type, a variant that
            contradicts its config or is not JSON-serialisable; a result is malformed.
    """
    folder = Path(folder)
    _check_training(training)
    summary = copy.deepcopy(dict(training))
    summary["dataset"] = {**summary["dataset"], "hub_id": _resolve_dataset_hub_id(training["dataset"])}
    # The summary ships with the model (and to the Hub): credentials never enter it.
    summary["command"] = _redact_command(summary["command"])
    summary["hyperparameters"] = {
        key: "(redacted)" if SECRET_KEY.search(key) and value else value
        for key, value in summary["hyperparameters"].items()
    }
    card = _build_card(folder, summary, results)  # validates results before anything is written
    atomic_write_json(folder / SUMMARY_FILE, summary)
    atomic_write_text(folder / CARD_FILE, str(card))
    return card


def update_card_results(model_folder: str | Path, results: list[dict]) -> None:
    """Replace the evaluation results of the card in ``model_folder`` (its ``model-index`` and Results).

    The card is re-rendered from ``training_summary.json`` (written by ``render_model_card``) with
    ``results``; metadata keys that were added to the existing ``README.md`` after it was rendered (and
    that the renderer does not set) are kept. An empty list removes the results.

    Raises:
        FileNotFoundError: the folder has no ``README.md`` or no ``training_summary.json``.
        ValueError: a malformed result, or a summary that is not a valid ``training`` dict.
    """
    folder = Path(model_folder)
    readme, summary_path = folder / CARD_FILE, folder / SUMMARY_FILE
    if not readme.is_file():
        raise FileNotFoundError(f"{folder} has no {CARD_FILE}: render the card first (render_model_card)")
    if not summary_path.is_file():
        raise FileNotFoundError(
            f"{folder} has no {SUMMARY_FILE}, so its card cannot be re-rendered: render it with "
            "render_model_card, which writes that file"
        )
    previous = ModelCard.load(readme)
    try:
        training = json.loads(summary_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{summary_path} is not valid JSON: {error}") from None
    _check_training(training)
    if "hub_id" not in training["dataset"]:
        training["dataset"]["hub_id"] = _resolve_dataset_hub_id(training["dataset"])
    card = _build_card(folder, training, results)
    rendered_keys = set(card.data.to_dict())
    for key, value in previous.data.to_dict().items():
        if key not in rendered_keys and key != "model-index":
            card.data[key] = value
    atomic_write_text(readme, str(card))
