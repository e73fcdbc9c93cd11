"""Checkpoints of a training run, in safetensors and JSON only: nothing in a checkpoint is ever unpickled.

A checkpoint folder holds

* ``model.safetensors``: the weights (``safetensors.torch.save_model``, shared tensors handled);
* ``optimizer.safetensors`` + ``optimizer.json``: the optimiser's ``state_dict``, its tensors flattened into
  safetensors under ``state.<param index>.<name>`` and the rest (param groups, non-tensor state) as JSON;
* ``grad_scaler.json``: the fp16 loss scaler's state (only with ``--mixed_precision fp16``);
* ``rng_state_<rank>.safetensors`` + ``rng_state_<rank>.json``: each process's random generators (torch CPU
  and CUDA as uint8 tensors; Python ``random`` and numpy's global generator as JSON);
* ``trainer_state.json``: ``TrainerState``; ``run_signature.json``: the settings a resume must share.

There is no learning-rate scheduler or sampler state to save: both are pure functions of the update number.
Accelerate's ``save_state``/``load_state`` are not used because they pickle the RNG states and registered
objects (``custom_checkpoint_0.pkl``, read back with ``weights_only=False``), which runs whatever a crafted
file holds. A checkpoint holding any pickle-like file (the earlier accelerate format) is refused unread.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from dataset_builder.files import atomic_write_json

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d{8})$")
SIGNATURE_FILE = "run_signature.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_TENSORS, OPTIMIZER_STRUCTURE = "optimizer.safetensors", "optimizer.json"
SCALER_FILE = "grad_scaler.json"
TRAINER_STATE_FILE = "trainer_state.json"
# Suffixes of pickled files (accelerate's optimizer.bin, random_states_*.pkl, custom_checkpoint_*.pkl, torch.save).
PICKLE_SUFFIXES = (".pkl", ".pickle", ".bin", ".pt", ".pth", ".ckpt")


class CheckpointProblem(ValueError):
    """A checkpoint that cannot be resumed from (old format, incomplete, corrupt or tampered with)."""


@dataclass
class TrainerState:
    """What the loop needs, besides model/optimiser/RNG, to continue exactly."""

    update: int = 0  # optimiser updates done = global batches consumed (the data order is a function of it)
    frames: int = 0  # training frames (valid steps) consumed, all processes together
    episodes: int = 0  # training episodes consumed, all processes together
    best_validation_success: float = -1.0
    best_update: int = -1
    validations: list[dict[str, float]] = field(default_factory=list)
    last_metrics: dict[str, float] = field(default_factory=dict)  # the latest logged training metrics


def checkpoint_dir(output_dir: Path, update: int) -> Path:
    return output_dir / "checkpoints" / f"checkpoint-{update:08d}"


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temp folders of an interrupted save are ignored)."""
    folder = output_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and CHECKPOINT_PATTERN.match(p.name))


def _rng_files(rank: int) -> tuple[str, str]:
    return f"rng_state_{rank}.safetensors", f"rng_state_{rank}.json"


def save_checkpoint(
    accelerator: Any,
    output_dir: Path,
    update: int,
    signature: dict[str, Any],
    keep_last: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainerState,
) -> Path:
    """Write a checkpoint into a temp folder, renamed once every process has written its part.

    ``model`` is the unwrapped model. Its weights and the optimiser state are the same on every process
    (DDP), so the main process writes them; each process writes its own random generators.
    """
    final = checkpoint_dir(output_dir, update)
    temporary = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_model(model, str(temporary / MODEL_FILE))
        tensors, structure = _flatten_optimizer_state(optimizer.state_dict())
        save_file(tensors, str(temporary / OPTIMIZER_TENSORS))
        _write_json(temporary / OPTIMIZER_STRUCTURE, structure)
        if accelerator.scaler is not None:
            _write_json(temporary / SCALER_FILE, accelerator.scaler.state_dict())
        _write_json(temporary / TRAINER_STATE_FILE, asdict(state))
    rng_tensors, rng_json = _rng_files(accelerator.process_index)
    generators, rng_values = _rng_state()
    save_file(generators, str(temporary / rng_tensors))
    _write_json(temporary / rng_json, rng_values)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_json(temporary / SIGNATURE_FILE, signature)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temporary, final)
        for old in list_checkpoints(output_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(
    checkpoint: Path,
    accelerator: Any,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainerState,
) -> None:
    """Restore model, optimiser, scaler, this process's generators and ``state`` from ``checkpoint``.

    Only safetensors and JSON are read; anything else that looks like a pickle makes the whole checkpoint
    refused before a byte of it is read. Raises ``CheckpointProblem`` naming the file at fault.
    """
    _refuse_pickles(checkpoint)
    rng_tensors, rng_json = _rng_files(accelerator.process_index)
    required = [MODEL_FILE, OPTIMIZER_TENSORS, OPTIMIZER_STRUCTURE, TRAINER_STATE_FILE, rng_tensors, rng_json]
    if accelerator.scaler is not None:
        required.append(SCALER_FILE)
    missing = [name for name in required if not (checkpoint / name).is_file()]
    if missing:
        raise CheckpointProblem(f"{checkpoint} is incomplete: it lacks {missing}")

    with _reading(checkpoint / MODEL_FILE):
        load_model(model, str(checkpoint / MODEL_FILE), strict=True)
    with _reading(checkpoint / OPTIMIZER_TENSORS):
        optimizer_tensors = load_file(str(checkpoint / OPTIMIZER_TENSORS))
    with _reading(checkpoint / OPTIMIZER_STRUCTURE):
        structure = _read_json(checkpoint / OPTIMIZER_STRUCTURE)
        optimizer.load_state_dict(_unflatten_optimizer_state(optimizer_tensors, structure, optimizer.param_groups))
    if accelerator.scaler is not None:
        with _reading(checkpoint / SCALER_FILE):
            accelerator.scaler.load_state_dict(_read_json(checkpoint / SCALER_FILE))
    with _reading(checkpoint / TRAINER_STATE_FILE):
        saved = _read_json(checkpoint / TRAINER_STATE_FILE)
        kinds = {f.name: type(getattr(TrainerState(), f.name)) for f in fields(TrainerState)}
        if not isinstance(saved, dict) or set(saved) != set(kinds):
            raise ValueError(f"expected a JSON object with the keys {sorted(kinds)}")
        for name, value in saved.items():
            if not isinstance(value, kinds[name] | (int if kinds[name] is float else kinds[name])):
                raise ValueError(f"{name} must be of type {kinds[name].__name__}, got {value!r}")
            setattr(state, name, value)
    with _reading(checkpoint / rng_tensors):
        generators = load_file(str(checkpoint / rng_tensors))
    with _reading(checkpoint / rng_json):
        _set_rng_state(generators, _read_json(checkpoint / rng_json))


def remove_stale_temporaries(output_dir: Path) -> int:
    """Delete half-written checkpoints left by an interrupted run; returns how many."""
    folder = output_dir / "checkpoints"
    stale = [p for p in folder.glob("checkpoint-*.tmp")] if folder.is_dir() else []
    for path in stale:
        shutil.rmtree(path)
    return len(stale)


def check_signature(checkpoint: Path, signature: dict[str, Any]) -> None:
    """Refuse to resume from a checkpoint whose run differs in anything that changes the result."""
    _refuse_pickles(checkpoint)  # first: an old-format checkpoint is named as such, whatever its settings
    path = checkpoint / SIGNATURE_FILE
    if not path.is_file():
        raise CheckpointProblem(f"{checkpoint} has no {SIGNATURE_FILE}: not a checkpoint of train/run.py")
    with _reading(path):
        saved = _read_json(path)
        if not isinstance(saved, dict):
            raise ValueError("expected a JSON object")
    differences = [
        f"{key}: checkpoint {saved.get(key)!r}, now {signature.get(key)!r}"
        for key in sorted(set(saved) | set(signature))
        if saved.get(key) != signature.get(key)
    ]
    if differences:
        raise CheckpointProblem(
            f"cannot resume from {checkpoint}: the run's settings changed ({'; '.join(differences)}). "
            "Resume with the original settings, or start afresh in another --output_dir (or with --overwrite)"
        )


# ------------------------------------------------------------------------------------------- helpers
def _refuse_pickles(checkpoint: Path) -> None:
    pickles = sorted(p.name for p in checkpoint.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointProblem(
            f"{checkpoint} holds pickle files ({', '.join(pickles)}): it is a checkpoint of an earlier train/run.py "
            "(accelerate's format) or has been tampered with, and a pickle can run code when loaded, so this "
            "version does not read it. Start the run afresh (--overwrite, or another --output_dir), or finish it "
            "with the version that wrote it"
        )


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn a failure to read or apply ``path`` into a ``CheckpointProblem`` that names the file."""
    try:
        yield
    except CheckpointProblem:
        raise
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        raise CheckpointProblem(
            f"cannot resume: {path} is not a valid checkpoint file of train/run.py "
            f"({type(error).__name__}: {error}); it may be truncated or tampered with"
        ) from error


def _write_json(path: Path, value: Any) -> None:
    atomic_write_json(path, value, sort_keys=True)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _flatten_optimizer_state(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A torch optimiser ``state_dict`` as (safetensors tensors, JSON structure referring to them)."""
    tensors: dict[str, torch.Tensor] = {}
    state: dict[str, dict[str, Any]] = {}
    for index, values in state_dict["state"].items():
        entry = {}
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                key = f"state.{index}.{name}"
                tensors[key] = value.detach().contiguous().cpu()
                entry[name] = {"tensor": key}
            else:
                entry[name] = {"value": value}
        state[str(index)] = entry
    return tensors, {"state": state, "param_groups": state_dict["param_groups"]}


def _unflatten_optimizer_state(
    tensors: dict[str, torch.Tensor], structure: dict[str, Any], current_groups: list[dict[str, Any]]
) -> dict[str, Any]:
    state = {
        int(index): {
            name: tensors[item["tensor"]] if "tensor" in item else item["value"] for name, item in entry.items()
        }
        for index, entry in structure["state"].items()
    }
    # JSON has no tuples: give back the types the optimiser uses (e.g. Adam's betas).
    groups = [
        {key: tuple(value) if isinstance(current.get(key), tuple) else value for key, value in group.items()}
        for group, current in zip(structure["param_groups"], current_groups, strict=True)
    ]
    return {"state": state, "param_groups": groups}


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    generators = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        generators |= {f"torch_cuda_{i}": state for i, state in enumerate(torch.cuda.get_rng_state_all())}
    version, internal, gauss_next = random.getstate()
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    values = {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "numpy": {"bit_generator": name, "keys": keys.tolist(), "pos": int(position), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached_gaussian)},
    }  # fmt: skip
    return generators, values


def _set_rng_state(generators: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
    if any(tensor.dtype != torch.uint8 for tensor in generators.values()):
        raise ValueError("generator states must be uint8 tensors")
    cuda = sorted((k for k in generators if k.startswith("torch_cuda_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    python, numpy_state = values["python"], values["numpy"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
    np.random.set_state((numpy_state["bit_generator"], np.asarray(numpy_state["keys"], dtype=np.uint32),
                         numpy_state["pos"], numpy_state["has_gauss"], numpy_state["cached_gaussian"]))  # fmt: skip
    torch.set_rng_state(generators["torch_cpu"])
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([generators[k] for k in cuda])
