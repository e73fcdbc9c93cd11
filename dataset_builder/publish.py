"""Publish a finished thought-dataset folder to the Hugging Face Hub as a dataset repo.

Upload path in huggingface_hub 2.4 (read from the installed source, there is no ``upload_large_folder``
any more): ``HfApi.upload_folder`` itself is the resumable, multi-commit uploader when ``hf_xet`` is
available (``_upload_pipeline.pipelined_upload``): it asks ``POST /api/datasets/{repo}/preupload/{rev}``
which files are "regular" git blobs (sent base64 in the ndjson ``/commit`` payload) and which go through
Xet storage, commits in adaptive batches, and skips files whose remote oid already matches, so re-running an
interrupted push resumes it. Without ``hf_xet`` (or with ``HF_HUB_DISABLE_XET=1``) it falls back to a single
``create_commit`` that is not split into batches. ``large_folder_threshold_bytes`` therefore decides
whether the push *requires* the resumable pipeline rather than choosing a different API call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

# huggingface_hub 2.4's HTTP client: its transport errors (no network, DNS, timeouts) reach us unwrapped.
import httpx2
from huggingface_hub import HfApi
from huggingface_hub.errors import OfflineModeIsEnabled
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

# Not re-exported by huggingface_hub.utils in 2.4, but it is the exact check upload_folder uses to pick the
# pipelined uploader, so our size decision cannot disagree with the client's.
from huggingface_hub.utils._runtime import is_xet_available

from dataset_builder.card import card_names_repo, rewrite_card
from dataset_builder.files import atomic_write_bytes, check_repo_id

logger = logging.getLogger(__name__)

COMMIT_MESSAGE = "Upload thought dataset with hf-thought-cloning (dataset_builder.publish)"

# Local artefacts that must never reach the Hub: a datasets cache created inside the folder, temporary
# files of interrupted writes, and editor lock files. fnmatch's `*` crosses `/`, but `**/x` still needs a
# `/`, so root-level temp/lock files get their own patterns.
IGNORE_PATTERNS: tuple[str, ...] = (".cache/**", "*.tmp*", "**/*.tmp*", ".~*", "**/.~*")

# What `python -m dataset_builder generate` leaves behind when it finished.
REQUIRED_FILES: tuple[str, ...] = ("README.md", "generation/manifest.json")
DATA_GLOB = "data/**/*.parquet"


class PublishError(RuntimeError):
    """The push cannot go on (offline mode, no network, a large folder without hf_xet); says how to fix it."""


@dataclass(frozen=True)
class UploadPlan:
    """The files that would be pushed and which upload strategy their total size calls for."""

    files: tuple[str, ...]  # POSIX paths relative to the folder, sorted
    total_bytes: int
    large: bool  # at or above the threshold: needs the resumable multi-commit pipeline (hf_xet)


def check_dataset_folder(folder: str | Path) -> Path:
    """Return ``folder`` as a Path if it looks like a finished dataset folder, else raise ValueError."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ValueError(
            f"Dataset folder {str(path)!r} does not exist or is not a directory. "
            "Create it with `python -m dataset_builder generate --output DIR` first."
        )
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if not any(p.is_file() for p in path.glob(DATA_GLOB)):
        missing.append(f"{DATA_GLOB} (no parquet shards)")
    if missing:
        raise ValueError(
            f"{str(path)!r} is not a finished thought-dataset folder: missing {', '.join(missing)}. "
            "Run `python -m dataset_builder generate` (then `python -m dataset_builder validate`) "
            "to produce it before publishing."
        )
    return path


def plan_upload(folder: str | Path, large_folder_threshold_bytes: int = 1_000_000_000) -> UploadPlan:
    """List the files ``upload_folder`` will send (same filters) and size them against the threshold."""
    root = Path(folder).expanduser().resolve()
    relpaths = sorted(p.relative_to(root).as_posix() for p in root.glob("**/*") if p.is_file())
    kept = tuple(filter_repo_objects(relpaths, ignore_patterns=[*IGNORE_PATTERNS, *DEFAULT_IGNORE_PATTERNS]))
    total = sum((root / rel).stat().st_size for rel in kept)
    return UploadPlan(files=kept, total_bytes=total, large=total >= large_folder_threshold_bytes)


def push_dataset(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
    large_folder_threshold_bytes: int = 1_000_000_000,
    endpoint: str | None = None,
) -> str:
    """Create (or reuse) the dataset repo ``repo_id`` and upload ``folder`` to it; return the repo URL.

    Once the repo exists, ``README.md`` in ``folder`` is re-rendered (atomically) so that its usage snippet
    loads ``repo_id`` instead of the ``<org>/<folder name>`` placeholder, unless it already names ``repo_id``:
    the published card always names the repo it is in, and the folder keeps matching what was pushed. If the
    upload fails, the card is put back as it was.

    ``private`` only applies when the repo is created (the Hub ignores it for an existing repo).
    ``revision`` must name an existing branch (default: ``main``). Hub HTTP errors propagate unchanged
    (``HfHubHTTPError`` and subclasses); offline mode and an unreachable Hub become a ``PublishError`` that
    says what to do.
    """
    # All local checks run before the first request, so a typo costs no network round trip.
    path = check_dataset_folder(folder)
    check_repo_id(repo_id)
    card_path = path / "README.md"
    original_card = card_path.read_bytes()
    rename_card = not card_names_repo(original_card.decode("utf-8"), repo_id)
    plan = plan_upload(path, large_folder_threshold_bytes)
    if plan.large and not is_xet_available():
        # The fallback single commit is not split or resumable: refuse rather than risk a multi-GB retry.
        raise PublishError(
            f"{str(path)!r} holds {plan.total_bytes:,} bytes in {len(plan.files)} files (threshold "
            f"{large_folder_threshold_bytes:,}): large folders are pushed with huggingface_hub's resumable "
            "multi-commit upload, which needs `hf_xet`. Install it (`pip install hf_xet`) and unset "
            "HF_HUB_DISABLE_XET, or raise large_folder_threshold_bytes to push in a single commit."
        )

    api = HfApi(endpoint=endpoint, token=token)
    try:
        repo_url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if rename_card:
            rewrite_card(path, repo_id)
            logger.info("Re-rendered %s for %s", card_path, repo_id)
        if plan.large:
            logger.info(
                "Pushing %s (%d files, %d bytes) in resumable batches; if interrupted, re-run the same "
                "command: files already on the Hub are skipped.",
                path,
                len(plan.files),
                plan.total_bytes,
            )
        try:
            # Both sizes use upload_folder: in 2.4 it is the chunked/resumable uploader (see module docstring).
            api.upload_folder(
                repo_id=repo_id,
                folder_path=path,
                repo_type="dataset",
                revision=revision,
                commit_message=COMMIT_MESSAGE,
                ignore_patterns=list(IGNORE_PATTERNS),
            )
        except BaseException:
            if rename_card:  # nothing was published under that name: the folder stays as it was
                atomic_write_bytes(card_path, original_card)
            raise
    except OfflineModeIsEnabled as err:
        raise PublishError(
            "Cannot publish: huggingface_hub offline mode is enabled (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE "
            "is set). Unset HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE), or set it to 0, and re-run."
        ) from err
    except httpx2.TransportError as err:
        raise PublishError(
            f"Cannot publish: the Hub at {api.endpoint} cannot be reached ({type(err).__name__}: {err}). Check the "
            "network connection (and HF_ENDPOINT), then re-run the same command: files already uploaded are "
            "skipped."
        ) from err
    return str(repo_url)
