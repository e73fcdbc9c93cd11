"""Publishing a dataset folder to the Hub, tested offline against tests/fake_hub.py (a real local HTTP server)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import huggingface_hub.constants
import pytest
from fake_hub import FakeHub
from huggingface_hub.errors import HfHubHTTPError

from dataset_builder import publish
from dataset_builder.cli import main as cli_main
from dataset_builder.publish import COMMIT_MESSAGE, plan_upload, push_dataset

LEVEL = "BabyAI-GoToLocal-v0"
SPLITS = ("train", "validation", "test")
TOKEN = "hf_test_publish_token"
REPO_ID = "thought-org/babyai-thoughts"
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def dataset_folder(generated_folder: Path, tmp_path: Path) -> Path:
    """A private copy per test, so tests may add or remove files."""
    return Path(shutil.copytree(generated_folder, tmp_path / "dataset"))


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch):
    # The test machine may run with HF_HUB_OFFLINE=1; the flag is read once at import into constants.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with FakeHub() as fake:  # reached via push_dataset(endpoint=...): HF_ENDPOINT is only read at import
        yield fake
    assert fake.unhandled == [], f"client called endpoints the fake does not know: {fake.unhandled}"


def _local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _push(folder: Path, hub: FakeHub, **kwargs) -> str:
    return push_dataset(folder, REPO_ID, token=TOKEN, endpoint=hub.endpoint, **kwargs)


# ---------------------------------------------------------------------------------------------- happy path


@pytest.mark.parametrize("private", [False, True])
def test_push_creates_dataset_repo_and_commits_exactly_the_folder(
    dataset_folder: Path, hub: FakeHub, private: bool
) -> None:
    url = _push(dataset_folder, hub, private=private)

    assert url == f"{hub.endpoint}/datasets/{REPO_ID}"
    create = next(r for r in hub.requests if r.path == "/api/repos/create")
    org, name = REPO_ID.split("/")
    assert create.json == {
        "name": name,
        "organization": org,
        "type": "dataset",
        "visibility": "private" if private else "public",
    }
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in hub.requests)

    repo = hub.repo(REPO_ID)
    assert repo.private is private
    assert repo.files() == _local_files(dataset_folder)  # byte-identical, nothing missing or extra
    assert "README.md" in repo.files()
    readme = repo.files()["README.md"].decode()  # the card names the repo it was pushed to
    assert f'load_dataset("{REPO_ID}", "{LEVEL}", split="train")' in readme and "<org>" not in readme
    assert "generation/manifest.json" in repo.files()
    assert {p for p in repo.files() if p.startswith("data/")} == {
        f"data/{LEVEL}/{split}-00000-of-00001.parquet" for split in SPLITS
    }
    assert [c["header"]["summary"] for c in repo.commits] == [COMMIT_MESSAGE]
    assert hub.paths_called() == [
        "POST /api/repos/create",
        "POST /api/validate-yaml",
        f"POST /api/datasets/{REPO_ID}/preupload/main",
        f"POST /api/datasets/{REPO_ID}/commit/main",
    ]


def test_pushed_card_names_the_repo_and_differs_only_in_the_snippet(
    dataset_folder: Path, generated_folder: Path, hub: FakeHub
) -> None:
    generated = (generated_folder / "README.md").read_text()
    placeholder = f'load_dataset("<org>/{dataset_folder.name}", '
    assert placeholder in generated
    _push(dataset_folder, hub)
    pushed = hub.repo(REPO_ID).files()["README.md"]
    assert pushed.decode() == generated.replace(placeholder, f'load_dataset("{REPO_ID}", ')
    assert (dataset_folder / "README.md").read_bytes() == pushed  # the folder matches what was pushed
    assert {p: c for p, c in hub.repo(REPO_ID).files().items() if p != "README.md"} == {
        p: c for p, c in _local_files(generated_folder).items() if p != "README.md"
    }

    # A card that already names the target repo is left alone (hand edits included) ...
    edited = pushed + b"\nHand-written note.\n"
    (dataset_folder / "README.md").write_bytes(edited)
    _push(dataset_folder, hub)
    assert hub.repo(REPO_ID).files()["README.md"] == edited
    # ... and one naming another repo is re-rendered for the repo it goes to.
    other = "thought-org/babyai-thoughts-v2"
    push_dataset(dataset_folder, other, token=TOKEN, endpoint=hub.endpoint)
    assert hub.repo(other).files()["README.md"].decode() == generated.replace(
        placeholder, f'load_dataset("{other}", '
    )


def test_local_artefacts_are_not_uploaded(dataset_folder: Path, hub: FakeHub) -> None:
    expected = _local_files(dataset_folder)
    junk = [
        ".cache/huggingface/datasets/lock",
        ".cache/other.arrow",
        f"data/{LEVEL}/.train-00000-of-00001.parquet.tmp-1234",
        "stray.tmp",
        ".~lock.README.md#",
        "generation/.~lock.manifest.json#",
    ]
    for rel in junk:
        (dataset_folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (dataset_folder / rel).write_bytes(b"junk")

    assert plan_upload(dataset_folder).files == tuple(sorted(expected))
    _push(dataset_folder, hub)
    # (read back after the push: it re-rendered README.md for the repo id)
    assert hub.repo(REPO_ID).files() == {rel: (dataset_folder / rel).read_bytes() for rel in expected}


def test_pushed_files_load_as_the_same_dataset(
    dataset_folder: Path, hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "hf_datasets_cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    _push(dataset_folder, hub)

    # Rebuild the repo from what the fake Hub received, then load it like a Hub checkout.
    clone = tmp_path / "clone"
    for rel, content in hub.repo(REPO_ID).files().items():
        (clone / rel).parent.mkdir(parents=True, exist_ok=True)
        (clone / rel).write_bytes(content)

    original = datasets.load_dataset(str(dataset_folder), LEVEL, cache_dir=str(cache / "original"))
    pushed = datasets.load_dataset(str(clone), LEVEL, cache_dir=str(cache / "clone"))
    assert sorted(pushed) == sorted(original) == sorted(SPLITS)
    for split in SPLITS:
        assert len(pushed[split]) > 0
        assert pushed[split].features == original[split].features
        assert pushed[split].to_list() == original[split].to_list()


def test_repush_skips_unchanged_files_and_commits_only_changes(dataset_folder: Path, hub: FakeHub) -> None:
    _push(dataset_folder, hub)
    _push(dataset_folder, hub)  # nothing changed: an interrupted/repeated push must not recommit
    repo = hub.repo(REPO_ID)
    assert len(repo.commits) == 1
    assert hub.paths_called()[-1] == f"GET /api/datasets/{REPO_ID}/revision/main"  # no-op: head lookup

    manifest = dataset_folder / "generation" / "manifest.json"
    manifest.write_text(manifest.read_text() + "\n")
    _push(dataset_folder, hub)
    assert len(repo.commits) == 2
    assert repo.commits[-1]["paths"] == ["generation/manifest.json"]
    assert repo.files() == _local_files(dataset_folder)


def test_push_to_existing_branch(dataset_folder: Path, hub: FakeHub) -> None:
    _push(dataset_folder, hub)
    hub.repo(REPO_ID).branches["v1"] = {}
    _push(dataset_folder, hub, revision="v1")
    assert hub.repo(REPO_ID).files("v1") == _local_files(dataset_folder)
    assert f"POST /api/datasets/{REPO_ID}/commit/v1" in hub.paths_called()


# ---------------------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("remove", "missing"),
    [
        ("README.md", "README.md"),
        ("generation/manifest.json", "generation/manifest.json"),
        ("data", "parquet"),
    ],
)
def test_incomplete_folder_is_rejected_before_any_request(
    dataset_folder: Path, hub: FakeHub, remove: str, missing: str
) -> None:
    target = dataset_folder / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(ValueError, match="dataset_builder generate") as info:
        _push(dataset_folder, hub)
    assert missing in str(info.value)
    assert hub.requests == []


def test_missing_folder_is_rejected_before_any_request(tmp_path: Path, hub: FakeHub) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        _push(tmp_path / "nope", hub)
    assert hub.requests == []


@pytest.mark.parametrize(
    "repo_id", ["babyai-thoughts", "a/b/c", "/name", "org/", "org/bad--name", "org/na me"]
)
def test_malformed_repo_id_is_rejected_before_any_request(
    dataset_folder: Path, hub: FakeHub, repo_id: str
) -> None:
    with pytest.raises(ValueError, match="org/name|Invalid repo id"):
        push_dataset(dataset_folder, repo_id, token=TOKEN, endpoint=hub.endpoint)
    assert hub.requests == []


# ---------------------------------------------------------------------------------------------- HTTP errors


def test_forbidden_create_propagates(dataset_folder: Path, hub: FakeHub) -> None:
    hub.fail(
        "POST", "/api/repos/create", 403, "You don't have the rights to create a dataset under this namespace"
    )
    with pytest.raises(HfHubHTTPError) as info:
        _push(dataset_folder, hub)
    assert info.value.response.status_code == 403
    # create_repo(exist_ok=True) checks whether the repo exists anyway, then re-raises the 403.
    assert hub.paths_called() == ["POST /api/repos/create", f"GET /api/datasets/{REPO_ID}"]
    assert hub.repos == {}


def test_failed_commit_propagates(dataset_folder: Path, hub: FakeHub) -> None:
    hub.fail("POST", f"/api/datasets/{REPO_ID}/commit/main", 403, "read-only token")
    with pytest.raises(HfHubHTTPError) as info:
        _push(dataset_folder, hub)
    assert info.value.response.status_code == 403
    assert hub.repo(REPO_ID).files() == {}


def test_missing_branch_propagates(dataset_folder: Path, hub: FakeHub) -> None:
    with pytest.raises(HfHubHTTPError, match="Revision Not Found"):
        _push(dataset_folder, hub, revision="does-not-exist")


def test_offline_mode_gives_actionable_error(
    dataset_folder: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="Unset HF_HUB_OFFLINE"):
        _push(dataset_folder, hub)
    assert hub.requests == []


# ---------------------------------------------------------------------------------------------- size threshold


def test_plan_upload_threshold_decision(dataset_folder: Path) -> None:
    plan = plan_upload(dataset_folder, large_folder_threshold_bytes=1)
    files = _local_files(dataset_folder)
    assert plan.total_bytes == sum(len(c) for c in files.values()) > 0
    assert plan.large
    assert plan_upload(dataset_folder, large_folder_threshold_bytes=plan.total_bytes).large
    assert not plan_upload(dataset_folder, large_folder_threshold_bytes=plan.total_bytes + 1).large


def test_large_folder_uses_resumable_pipeline(dataset_folder: Path, hub: FakeHub) -> None:
    # hf_xet is installed: upload_folder's multi-commit pipeline runs; the fake answers "regular" for every
    # file, so no Xet transfer is needed and the whole path is exercised up to the HTTP boundary.
    assert publish.is_xet_available()
    _push(dataset_folder, hub, large_folder_threshold_bytes=1)
    assert hub.repo(REPO_ID).files() == _local_files(dataset_folder)


def test_large_folder_without_xet_is_refused_before_any_request(
    dataset_folder: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    with pytest.raises(RuntimeError, match="hf_xet"):
        _push(dataset_folder, hub, large_folder_threshold_bytes=1)
    assert hub.requests == []


def test_small_folder_without_xet_uses_single_commit(
    dataset_folder: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Legacy create_commit path (no hf_xet): same endpoints, one commit, same files.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    assert not publish.is_xet_available()
    _push(dataset_folder, hub)
    repo = hub.repo(REPO_ID)
    assert repo.files() == _local_files(dataset_folder)
    assert len(repo.commits) == 1


# ---------------------------------------------------------------------------------------------- command line


def _closed_port_endpoint() -> str:
    with socket.socket() as probe:  # a port nothing listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        ("offline", "offline mode is enabled"),
        ("unreachable", "cannot be reached (ConnectError"),
        ("forbidden-create", "the Hub refused the push"),
        ("forbidden-commit", "the Hub refused the push"),
    ],
)
def test_failed_cli_push_says_why_and_leaves_the_folder_as_it_was(
    dataset_folder: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch, capsys, failure: str, message: str
) -> None:
    endpoint = _closed_port_endpoint() if failure == "unreachable" else hub.endpoint
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)  # what HF_ENDPOINT sets at import
    if failure == "offline":
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    elif failure == "forbidden-create":
        hub.fail("POST", "/api/repos/create", 403, "no rights in this namespace")
    elif failure == "forbidden-commit":
        hub.fail("POST", f"/api/datasets/{REPO_ID}/commit/main", 403, "read-only token")
    before = _local_files(dataset_folder)
    assert cli_main(["push", str(dataset_folder), "--repo_id", REPO_ID, "--token", TOKEN]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    # the card is re-rendered for the repo only once the upload succeeded: here it never did
    assert _local_files(dataset_folder) == before
    assert not hub.repos or hub.repo(REPO_ID).files() == {}


def test_push_without_network_from_a_shell(dataset_folder: Path) -> None:
    before = _local_files(dataset_folder)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    done = subprocess.run(
        [sys.executable, "-m", "dataset_builder", "push", str(dataset_folder), "--repo_id", REPO_ID],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        env={**env, "HF_ENDPOINT": _closed_port_endpoint(), "HF_TOKEN": TOKEN},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: Cannot publish: the Hub at http://127.0.0.1:") and "Traceback" not in done.stderr
    assert _local_files(dataset_folder) == before
