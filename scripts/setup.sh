#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine (idempotent, fast when done).
# torch first, pinned, so pip takes the CPU build from this machine's disk instead of a
# multi-GB CUDA build; then the project's requirements and the dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --disable-pip-version-check -q "torch==2.13.0" || python3 -m pip install -q "torch>=2.4"
python3 -m pip install --disable-pip-version-check -q -r requirements.txt -r requirements-dev.txt
