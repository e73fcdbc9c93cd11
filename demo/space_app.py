"""The Space's entry point: ``python -m demo.push`` copies this file into the Space folder as ``app.py``.

It serves the demo for the model named in ``space.json`` (``THOUGHT_CLONING_DEMO_MODEL``, a Space variable,
overrides it), on the address and port the Space gives Gradio (``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT``).
"""

import json
import os
from pathlib import Path

from demo.app import main

SETTINGS = json.loads(Path(__file__).with_name("space.json").read_text(encoding="utf-8"))


def model_id() -> str:
    return os.environ.get("THOUGHT_CLONING_DEMO_MODEL") or SETTINGS["model"]


if __name__ == "__main__":
    raise SystemExit(main(["--model", model_id()]))
