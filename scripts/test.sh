#!/usr/bin/env bash
# Set up everything the tests need, then run ruff, mypy and pytest exactly as CI does.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh --test
.venv/bin/ruff check node tests scripts
.venv/bin/ruff format --check node tests scripts
.venv/bin/mypy
.venv/bin/lint-imports --no-cache  # the layers of ARCHITECTURE.md
.venv/bin/pytest "$@"
