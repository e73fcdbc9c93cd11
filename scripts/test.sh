#!/usr/bin/env bash
# Set up .venv if needed, then lint and run the test suite (offline: nothing is fetched from the Hub).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
