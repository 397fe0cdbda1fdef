"""The examples run as their READMEs say: ``parapipe`` commands in the example's folder, in a
subprocess, on small generated data (the example's folder is on ``PYTHONPATH``, as ``cd`` gives)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def example_env(name: str, **extra: str) -> dict[str, str]:
    """The environment of a shell ``cd``-ed into ``examples/<name>``, plus this test's hooks."""
    paths = [str(EXAMPLES / name), str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), **extra}


def parapipe(name: str, cwd: Path, *args: str, timeout: float = 240, **env: str) -> subprocess.CompletedProcess[str]:
    """``parapipe ARGS`` as the example's README runs it (its own session, so a test can kill the
    whole run, workers included, with one ``killpg``)."""
    return subprocess.run([sys.executable, "-m", "parapipe.cli", *args], cwd=cwd, env=example_env(name, **env),
                          capture_output=True, text=True, timeout=timeout, start_new_session=True)  # fmt: skip


def python(name: str, cwd: Path, *args: str, timeout: float = 240, **env: str) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in the example's folder."""
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=example_env(name, **env), capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done
