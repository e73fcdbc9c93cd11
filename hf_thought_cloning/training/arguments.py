"""A YAML config plus command-line overrides, parsed into a typed dataclass by ``HfArgumentParser``.

The YAML values go through the same argparse actions as command-line values (types, choices, list
lengths), so ``epochs: 3.7`` is refused exactly as ``--epochs 3.7`` is, instead of being taken as given.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml
from transformers import HfArgumentParser

T = TypeVar("T")


class _ConfigValueError(Exception):
    """A YAML value that argparse refuses (raised instead of argparse's print-and-exit)."""


class _ValueChecker(HfArgumentParser):
    """The dataclass's parser with nothing required and errors raised, to convert one YAML file's values."""

    def error(self, message: str) -> NoReturn:
        raise _ConfigValueError(message)


def parse_config_and_overrides(dataclass_type: type[T], argv: list[str], prog: str | None = None) -> tuple[T, Path | None]:
    """``--config FILE.yaml`` sets the defaults; every other flag overrides them. Unknown keys are errors."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path, default=None)
    known, rest = pre.parse_known_args(argv)
    parser = HfArgumentParser(dataclass_type, prog=prog)
    parser.add_argument("--config", type=Path, default=None, help="YAML file whose keys set the defaults.")
    if known.config is not None:
        parser.set_defaults(**_config_values(parser, dataclass_type, known.config))
    # The extra --config argument comes back as a trailing namespace: keep only the dataclass.
    args = parser.parse_args_into_dataclasses(args=rest, look_for_args_file=False)[0]
    return args, known.config


def _config_values(parser: HfArgumentParser, dataclass_type: type, path: Path) -> dict[str, Any]:
    """The YAML file's values, converted and checked by the dataclass's own argparse actions."""
    if not path.is_file():
        parser.error(f"--config {path}: no such file (configs live in train/configs/)")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        parser.error(f"--config {path} is not valid YAML: {error}")
    values = {} if values is None else values
    if not isinstance(values, dict):
        parser.error(f"--config {path}: expected a mapping of argument names to values")
    names = {field.name for field in dataclasses.fields(dataclass_type)}
    unknown = sorted(set(values) - names, key=str)
    if unknown:
        parser.error(f"--config {path}: unknown keys {unknown} (see --help for the arguments)")

    checker = _ValueChecker(dataclass_type, exit_on_error=False)
    actions = {action.dest: action for action in checker._actions}
    for action in actions.values():
        action.required = False  # a required field may come from the command line instead
    typed: dict[str, Any] = {}
    for key, value in values.items():
        action = actions[key]
        takes_list = action.nargs in ("+", "*")
        if value is None:
            if action.default is not None:
                parser.error(f"--config {path}: {key}: null is not a value here (remove the key for the default)")
            typed[key] = None
            continue
        if isinstance(value, dict) or (isinstance(value, list) and not takes_list):
            parser.error(f"--config {path}: {key}: expected a single value, got {value!r}")
        if takes_list and value == []:
            typed[key] = []
            continue
        items = value if isinstance(value, list) else [value]
        if any(isinstance(item, dict | list) for item in items):
            parser.error(f"--config {path}: {key}: expected a list of values, got {value!r}")
        words = ["true" if item is True else "false" if item is False else str(item) for item in items]
        tokens = [f"--{key}", *words] if takes_list else [f"--{key}={words[0]}"]
        try:
            namespace, leftover = checker.parse_known_args(tokens)
        except (argparse.ArgumentError, _ConfigValueError) as error:
            parser.error(f"--config {path}: {key}: {value!r} is refused ({error})")
        if leftover:
            parser.error(f"--config {path}: {key}: cannot read {value!r}")
        typed[key] = getattr(namespace, key)
    return typed
