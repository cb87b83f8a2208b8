"""The project is installed into the environment the tests run in (scripts/setup.sh: pip install -e .)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path


def test_the_cli_runs_from_any_folder(tmp_path):
    env = {**os.environ, "PYTHONPATH": ""}  # no help from the repository being on the path
    module = subprocess.run([sys.executable, "-m", "flashvideo_core", "--help"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert module.returncode == 0, module.stderr
    assert "generate" in module.stdout and "enhance" in module.stdout
    script = shutil.which("flashvideo", path=str(Path(sys.executable).parent))
    assert script, "the `flashvideo` command is installed beside the interpreter"
    command = subprocess.run([script, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert command.returncode == 0 and command.stdout == module.stdout
