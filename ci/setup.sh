#!/usr/bin/env bash
# Install the project's requirements (torch 2.13.0: the CPU wheel on this machine, see requirements.txt).
set -euo pipefail
python -m pip install --quiet --disable-pip-version-check -r requirements.txt
