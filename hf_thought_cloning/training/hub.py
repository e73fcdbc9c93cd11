"""Publishing a trained model folder (and optionally checkpoints) to the Hugging Face Hub, and the demo's Space.

The endpoint is huggingface_hub's (``HF_ENDPOINT``, default https://huggingface.co) unless one is given,
and the token too (``HF_TOKEN`` or ``hf auth login``). Every failure to reach the Hub or have it accept a
request is raised as ``HubProblem`` with the cause in its message.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2  # huggingface_hub's HTTP client: its HTTPError covers both network errors and Hub answers
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import LocalTokenNotFoundError, OfflineModeIsEnabled

from dataset_builder.files import check_repo_id


class HubProblem(RuntimeError):
    """The Hub cannot be reached, or refused a request."""


def open_model_repo(
    repo_id: str, *, private: bool = False, token: str | None = None, endpoint: str | None = None
) -> str:
    """Create (or reuse) the model repo ``repo_id`` and return its URL: the check a run makes before
    training, so that a missing network, token or permission is reported before hours of compute."""
    check_repo_id(repo_id)
    with _hub_errors(repo_id, endpoint):
        return str(HfApi(endpoint=endpoint, token=token).create_repo(repo_id, repo_type="model", private=private,
                                                                     exist_ok=True))  # fmt: skip


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    path_in_repo: str | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload Thought Cloning model",
    endpoint: str | None = None,
) -> str:
    """Create (or reuse) the model repo ``repo_id`` and upload ``folder`` (into ``path_in_repo``); return the URL."""
    url = open_model_repo(repo_id, private=private, token=token, endpoint=endpoint)
    with _hub_errors(repo_id, endpoint):
        HfApi(endpoint=endpoint, token=token).upload_folder(
            repo_id=repo_id,
            folder_path=Path(folder),
            path_in_repo=path_in_repo,
            repo_type="model",
            commit_message=commit_message,
        )
    return url


def push_space(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload Thought Cloning demo",
    endpoint: str | None = None,
) -> str:
    """Create (or reuse) the Gradio Space ``repo_id`` and upload ``folder`` to it; return the Space's URL."""
    check_repo_id(repo_id)
    api = HfApi(endpoint=endpoint, token=token)
    with _hub_errors(repo_id, endpoint):
        url = str(
            api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        )
        api.upload_folder(
            repo_id=repo_id, folder_path=Path(folder), repo_type="space", commit_message=commit_message
        )
    return url


@contextmanager
def _hub_errors(repo_id: str, endpoint: str | None) -> Iterator[None]:
    where = endpoint or constants.ENDPOINT
    try:
        yield
    except OfflineModeIsEnabled as error:
        raise HubProblem(
            "cannot push: huggingface_hub offline mode is enabled (HF_HUB_OFFLINE); unset it and re-run"
        ) from error
    except LocalTokenNotFoundError as error:
        raise HubProblem(f"cannot push to {repo_id}: no Hub token (set HF_TOKEN or run `hf auth login`)") from error
    except httpx2.HTTPError as error:
        raise HubProblem(f"cannot push to {repo_id} at {where}: {type(error).__name__}: {error}") from error
