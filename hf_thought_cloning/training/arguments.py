"""A YAML config plus command-line overrides, parsed into a typed dataclass by ``HfArgumentParser``."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml
from transformers import HfArgumentParser

T = TypeVar("T")


def parse_config_and_overrides(dataclass_type: type[T], argv: list[str], prog: str | None = None) -> tuple[T, Path | None]:
    """``--config FILE.yaml`` sets the defaults; every other flag overrides them. Unknown keys are errors."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path, default=None)
    known, rest = pre.parse_known_args(argv)
    parser = HfArgumentParser(dataclass_type, prog=prog)
    parser.add_argument("--config", type=Path, default=None, help="YAML file whose keys set the defaults.")
    if known.config is not None:
        if not known.config.is_file():
            parser.error(f"--config {known.config}: no such file (configs live in train/configs/)")
        values: dict[str, Any] = yaml.safe_load(known.config.read_text()) or {}
        if not isinstance(values, dict):
            parser.error(f"--config {known.config}: expected a mapping of argument names to values")
        names = {field.name for field in dataclasses.fields(dataclass_type)}
        unknown = sorted(set(values) - names)
        if unknown:
            parser.error(f"--config {known.config}: unknown keys {unknown} (see --help for the arguments)")
        parser.set_defaults(**values)
    # The extra --config argument comes back as a trailing namespace: keep only the dataclass.
    args = parser.parse_args_into_dataclasses(args=rest, look_for_args_file=False)[0]
    return args, known.config
