#!/usr/bin/env bash
# Lint and format checks, as the model zoo style asks (ruff, line length 120).
set -euo pipefail
ruff check .
ruff format --check .
