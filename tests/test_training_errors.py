"""train/run.py refuses bad input up front: `error:` on stderr, exit code 2, before any training and before
the run folder exists (so nothing is half-written). The script's entry point runs in process (as the data
CLI's error tests do); the cases that hinge on huggingface_hub's environment (read at import) run it as a
subprocess."""

from __future__ import annotations

import importlib.util
import socket
import time
from pathlib import Path

import pytest
from conftest import TINY_TRAIN_ARGS, break_model_folder, save_tiny, train, trainer_module

# Placeholders for model folders made per test: save_tiny's, and one with truncated weights.
TINY_FOLDER = "{tiny}"
TRUNCATED_FOLDER = "{truncated}"


def unused_port() -> int:
    """A local port nothing listens on (connections to it are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def missing(package: str):
    return pytest.mark.skipif(importlib.util.find_spec(package) is not None, reason=f"{package} is installed")


ONLINE = {"HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_test_token", "HF_HUB_DISABLE_TELEMETRY": "1"}
CASES = [
    # arguments, YAML config text (or None), message on stderr; "{...}" are filled in per test
    pytest.param(["--learning_rate", "-1"], None, "--learning_rate must be a finite number > 0", id="lr-negative"),
    pytest.param(["--learning_rate", "nan"], None, "--learning_rate must be a finite number > 0, got nan", id="lr-nan"),
    pytest.param(["--mixed_precision", "foo"], None, "invalid choice: 'foo'", id="mixed-precision-unknown"),
    pytest.param(["--report_to", "foo"], None, "--report_to 'foo'", id="report-to-unknown"),
    pytest.param(["--num_attention_heads", "3"], None, "must divide --text_dim 32", id="heads-do-not-divide-text"),
    pytest.param(["--image_dim", "0"], None, "--image_dim must be >= 1, got 0", id="image-dim-zero"),
    pytest.param(["--episodes_per_epoch", "0"], None, "--episodes_per_epoch must be >= 1", id="episodes-per-epoch-0"),
    pytest.param(["--thought_loss_weight", "-1"], None, "--thought_loss_weight must be", id="thought-weight-negative"),
    pytest.param(["--variant", "behavioral-cloning", "--thought_loss_weight", "2"], None, "does not apply to",
                 id="thought-weight-for-bc"),
    pytest.param(["--init_from", "{tmp}/org/model"], None, "not a model folder", id="init-from-missing-folder"),
    pytest.param(["--init_from", TRUNCATED_FOLDER], None, "cannot load the model folder",
                 id="init-from-truncated-weights"),
    pytest.param(["--init_from", TINY_FOLDER, "--image_dim", "32"], None, "--image_dim 32 (the folder's is 16)",
                 id="init-from-other-dimensions"),
    pytest.param([], "epochs: [3\n", "is not valid YAML", id="yaml-syntax-error"),
    pytest.param([], "epochs: 3.7\n", "invalid int value: '3.7'", id="yaml-float-for-int"),
    pytest.param(["--report_to", "wandb"], None, "pip install wandb", id="wandb-missing", marks=missing("wandb")),
    pytest.param(["--report_to", "tensorboard,trackio"], None, "pip install trackio", id="trackio-missing",
                 marks=missing("trackio")),
    pytest.param(["--push_checkpoints"], None, "need --hub_model_id", id="push-without-repo"),
    pytest.param(["--push_to_hub", "--hub_model_id", "not a repo"], None, "not a repo", id="push-bad-repo-id"),
]  # fmt: skip


def command_line(generated_folder: Path, tmp_path: Path, arguments: list[str], config: str | None) -> list[str]:
    values = {"tmp": str(tmp_path)}
    if TINY_FOLDER in arguments:
        values["tiny"] = str(save_tiny(tmp_path / "tiny"))
    if TRUNCATED_FOLDER in arguments:
        values["truncated"] = str(break_model_folder(save_tiny(tmp_path / "truncated"), "truncated-weights"))
    arguments = [argument.format(**values) for argument in arguments]
    if config is not None:
        (tmp_path / "config.yaml").write_text(config)
        arguments = ["--config", str(tmp_path / "config.yaml"), *arguments]
    return ["--dataset", str(generated_folder), "--output_dir", str(tmp_path / "run"), *TINY_TRAIN_ARGS,
            "--epochs", "1", "--validation_every_epochs", "0", *arguments]  # fmt: skip


@pytest.mark.parametrize(("arguments", "config", "message"), CASES)
def test_bad_input_fails_fast_with_an_error_line(generated_folder, tmp_path, capsys, arguments, config, message):
    argv = command_line(generated_folder, tmp_path, arguments, config)
    with pytest.raises(SystemExit) as exit_info:
        trainer_module().main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "error:" in error and message in error, error
    assert "Repo id must be" not in error
    assert not (tmp_path / "run").exists()  # refused before the run folder was made: nothing half-written


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({"HF_HUB_OFFLINE": "1"}, "offline mode", id="offline"),
        pytest.param({**ONLINE, "HF_ENDPOINT": "http://127.0.0.1:{port}"},
                     "cannot push to org/agent at http://127.0.0.1:{port}", id="unreachable-hub"),
    ],
)  # fmt: skip
def test_push_to_hub_without_a_hub_fails_before_training(generated_folder, tmp_path, env, message):
    port = str(unused_port())
    output = tmp_path / "run"
    start = time.perf_counter()
    done = train(generated_folder, output, "--epochs", "1", "--push_to_hub", "--hub_model_id", "org/agent",
                 check=False, env={name: value.format(port=port) for name, value in env.items()})  # fmt: skip
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "error:" in done.stderr and message.format(port=port) in done.stderr and "Traceback" not in done.stderr
    assert not output.exists() and time.perf_counter() - start < 60
