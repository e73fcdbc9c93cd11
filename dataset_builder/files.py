"""Small torch-free helpers that both packages use: atomic file writes, Parquet reads and Hub repo-id checks.

Every file the project writes goes through ``atomic_write``: a temporary file beside the target, then
``os.replace``, so a reader (or an interrupted run) never sees half a file. ``hf_thought_cloning`` imports
this module; it imports nothing of ``hf_thought_cloning``.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pyarrow is imported where it is read, to keep this module's import light
    import pyarrow

# Names of temporary files contain this marker: resume deletes such debris, publishing never uploads it.
TMP_MARKER = ".tmp-"


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """``write(tmp)``, then rename ``tmp`` onto ``path``; on any failure (Ctrl-C included) ``tmp`` is removed.

    The temporary keeps ``path``'s suffix, because some writers (image and video encoders) read the format
    from it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_MARKER}{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, data: Any, sort_keys: bool = False) -> Path:
    """``data`` as indented JSON (one space) with a final newline."""
    return atomic_write_text(path, json.dumps(data, indent=1, sort_keys=sort_keys) + "\n")


def read_parquet(source: Any, columns: list[str] | None = None) -> pyarrow.Table:
    """A Parquet file (a path or a pyarrow buffer) as a ``pyarrow.Table``, read on the calling thread.

    Reads on Arrow's thread pool can abort the process as it exits ("terminate called without an active
    exception", exit -6, after everything else worked; apache/arrow#34314): measured here as 2 of 30 runs of
    ``python -m dataset_builder show``, 0 of 60 with ``use_threads=False``, which costs nothing at our shard sizes.
    """
    import pyarrow.parquet as pq

    return pq.read_table(source, columns=columns, use_threads=False)


def check_repo_id(repo_id: str) -> None:
    """Require ``org/name``: a bare name would silently land in the token owner's namespace."""
    from huggingface_hub.utils import validate_repo_id

    parts = repo_id.split("/") if isinstance(repo_id, str) else []
    if len(parts) != 2 or not all(parts):
        raise ValueError(
            f"Invalid repo id {repo_id!r}: expected the form 'org/name' (e.g. 'my-org/babyai-thoughts'), "
            "with exactly one '/'."
        )
    try:
        validate_repo_id(repo_id)
    except ValueError as err:  # HFValidationError subclasses ValueError; restate it in our terms
        raise ValueError(f"Invalid repo id {repo_id!r}: {err}") from err


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    """Installed version of each named distribution (None when it is not installed), for provenance records."""
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions
