"""Checkpoints of a training run: accelerate's ``save_state`` written atomically, the last K kept, and a
signature of the run so that ``--resume`` refuses a checkpoint made with incompatible settings."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d{8})$")
SIGNATURE_FILE = "run_signature.json"


@dataclass
class TrainerState:
    """What the loop needs, besides model/optimiser/RNG (saved by accelerate), to continue exactly."""

    update: int = 0  # optimiser updates done = global batches consumed (the data order is a function of it)
    frames: int = 0  # training frames (valid steps) consumed, all processes together
    best_validation_success: float = -1.0
    best_update: int = -1
    validations: list[dict[str, float]] = field(default_factory=list)
    last_metrics: dict[str, float] = field(default_factory=dict)  # the latest logged training metrics

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def checkpoint_dir(output_dir: Path, update: int) -> Path:
    return output_dir / "checkpoints" / f"checkpoint-{update:08d}"


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temp folders of an interrupted save are ignored)."""
    folder = output_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and CHECKPOINT_PATTERN.match(p.name))


def save_checkpoint(accelerator: Any, output_dir: Path, update: int, signature: dict[str, Any], keep_last: int) -> Path:
    """``accelerator.save_state`` into a temp folder, renamed once every process has written its part."""
    final = checkpoint_dir(output_dir, update)
    temporary = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (temporary / SIGNATURE_FILE).write_text(json.dumps(signature, indent=1, sort_keys=True) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temporary, final)
        for old in list_checkpoints(output_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def remove_stale_temporaries(output_dir: Path) -> int:
    """Delete half-written checkpoints left by an interrupted run; returns how many."""
    folder = output_dir / "checkpoints"
    stale = [p for p in folder.glob("checkpoint-*.tmp")] if folder.is_dir() else []
    for path in stale:
        shutil.rmtree(path)
    return len(stale)


def check_signature(checkpoint: Path, signature: dict[str, Any]) -> None:
    """Refuse to resume from a checkpoint whose run differs in anything that changes the result."""
    path = checkpoint / SIGNATURE_FILE
    if not path.is_file():
        raise ValueError(f"{checkpoint} has no {SIGNATURE_FILE}: not a checkpoint of train/run.py")
    saved = json.loads(path.read_text())
    differences = [
        f"{key}: checkpoint {saved.get(key)!r}, now {signature.get(key)!r}"
        for key in sorted(set(saved) | set(signature))
        if saved.get(key) != signature.get(key)
    ]
    if differences:
        raise ValueError(
            f"cannot resume from {checkpoint}: the run's settings changed ({'; '.join(differences)}). "
            "Resume with the original settings, or start afresh in another --output-dir (or with --overwrite)"
        )
