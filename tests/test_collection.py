"""Every process collects the same tests.

``make test`` runs the suite with pytest-xdist: each worker collects it on its own and
the run stops if their lists differ. A test parameter computed at import time from the
clock (a gzip header's mtime), the hash seed (a set's order) or a random key would name
its test differently in each worker, and fail CI only now and then.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _collect(hash_seed: str) -> subprocess.Popen[str]:
    # Not as an xdist worker, whatever this process is.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    env["PYTHONHASHSEED"] = hash_seed
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def test_two_processes_collect_the_same_test_ids() -> None:
    first = _collect("1")
    # A second apart, with another hash seed: a parameter taken from the clock, or
    # from iterating a set of strings, would differ between the two.
    time.sleep(1.1)
    second = _collect("2")
    listed = []
    for process in (first, second):
        out, _ = process.communicate(timeout=300)
        assert process.returncode == 0, out[-2000:]
        listed.append([line for line in out.splitlines() if "::" in line])
    assert len(listed[0]) > 5000, "the collection found almost nothing"
    assert listed[0] == listed[1], sorted(set(listed[0]) ^ set(listed[1]))[:10]
