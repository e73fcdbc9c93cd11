"""Publishing a trained model folder (and optionally checkpoints) to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import OfflineModeIsEnabled

from dataset_builder.publish import check_repo_id


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
    check_repo_id(repo_id)
    api = HfApi(endpoint=endpoint, token=token)
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            folder_path=Path(folder),
            path_in_repo=path_in_repo,
            repo_type="model",
            commit_message=commit_message,
        )
    except OfflineModeIsEnabled as error:
        raise RuntimeError(
            "cannot push: huggingface_hub offline mode is enabled (HF_HUB_OFFLINE); unset it and re-run"
        ) from error
    return str(url)
