#!/usr/bin/env bash
# Set up .venv if needed, then lint and run the test suite (offline: nothing is fetched from the Hub).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check .
# One pytest worker per core (the tests are mostly single-threaded subprocesses); later options win, so
# `scripts/test.sh -n 0` runs in one process.
.venv/bin/python -m pytest -q -n auto --dist worksteal "$@"
