#!/usr/bin/env bash
# Makes the project's own Python environment, .venv in the repository ($FLASHVIDEO_VENV to put it
# elsewhere), or reuses it, and installs into it, never into a global Python:
#   - the project itself, editable (`pip install -e .`): `flashvideo ...` and `python -m flashvideo_core`
#     then work from any folder with .venv/bin on PATH (or `source .venv/bin/activate`);
#   - its dependencies and the dev tools (pytest, ruff) at the versions in constraints/tested.txt, the
#     ones the suite was last green with. torch is pinned there too; a torch already in .venv at that
#     version (e.g. a CPU build you installed first, see the README) is kept.
# About 1.5 GB with a CPU torch; with the CUDA build a plain index serves, about 5 GB more.
# Idempotent: a second run that finds nothing changed returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${FLASHVIDEO_VENV:-.venv}
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv with $("$python" --version 2>&1)" >&2
    if ! "$python" -m venv "$venv"; then
        echo "setup: error: '$python -m venv' failed; install the venv module (Debian/Ubuntu: apt-get install python3-venv)" >&2
        rm -rf "$venv"
        exit 1
    fi
fi

stamp="$venv/.flashvideo-setup"
wanted=$(cat pyproject.toml requirements.txt requirements-dev.txt constraints/tested.txt | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
    exit 0
fi
echo "setup: installing the project and its pinned test environment into $venv" >&2
"$venv/bin/python" -m pip install --disable-pip-version-check -q -c constraints/tested.txt -e . -r requirements-dev.txt
echo "$wanted" > "$stamp"
