"""Run one measured case in a fresh Python process: its peak resident memory and wall time.

A child process gives an honest peak (ru_maxrss of that process alone) for each case, so cases
measured in one benchmark run can be compared as ratios.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WRAPPER = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
setup = {setup!r}
work = {work!r}
scope = {{}}
exec(setup, scope)
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
exec(work, scope)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("RESULT", json.dumps({{"peak_kib": peak, "baseline_kib": baseline, "seconds": seconds,
                            "value": scope.get("result")}}))
"""


def measure(setup: str, work: str) -> dict:
    """Run `setup` then time `work` in a child; returns peak_kib, baseline_kib (after setup), seconds, value.

    `work` may set a JSON-serialisable `result` variable.
    """
    code = WRAPPER.format(root=str(ROOT), setup=setup, work=work)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(
            f"benchmark case failed (exit code {done.returncode}; a negative code is a signal, "
            f"-9 usually the out-of-memory killer):\n{done.stdout[-1000:]}{done.stderr[-3000:]}"
        )
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])
