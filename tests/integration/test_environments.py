"""Stages on their own interpreters (``python=``): two virtualenvs with different numpy versions.

The environments are made once per session (``python -m venv`` and pip, so PyPI must be
reachable; the tests skip, saying why, when it is not). parapipe reaches them through a
``.pth`` file naming this checkout's ``src``, as ``pip install -e`` would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import parapipe as pp

from . import _env_stages as st

pytestmark = pytest.mark.slow

SRC = Path(pp.__file__).resolve().parents[1]
NUMPY = {"old": "1.26.4", "new": "2.4.6" if np.__version__.startswith("2") else "2.2.6"}


def _make_env(root: Path, numpy: str | None, with_parapipe: bool) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, capture_output=True, timeout=300)
    python = root / "bin" / "python"
    if numpy is not None:
        pip = [str(python), "-m", "pip", "install", "-q", f"numpy=={numpy}", "threadpoolctl", "psutil", "tqdm"]
        subprocess.run(pip, check=True, capture_output=True, timeout=600)
    if with_parapipe:
        site = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        Path(site, "parapipe_src.pth").write_text(f"{SRC}\n")
    return python


@pytest.fixture(scope="session")
def envs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("envs")
    try:
        return {
            "old": _make_env(root / "old", NUMPY["old"], True),
            "new": _make_env(root / "new", NUMPY["new"], True),
            "bare": _make_env(root / "bare", None, False),
        }
    except (subprocess.SubprocessError, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        pytest.skip(f"cannot create the test virtualenvs (PyPI unreachable?): {exc} {detail[-500:]!r}")


def test_two_stages_answer_from_their_own_numpy_in_one_parallel(envs):
    old = pp.stage(st.report, name="old", python=envs["old"].parent.parent)  # the env directory
    new = pp.stage(st.report, name="new", python=envs["new"])  # the interpreter itself
    with pp.Engine(pp.Parallel(old=old, new=new)) as engine:
        out = engine.submit(1).result()
        pythons = {w["stage"]: w["python"] for w in engine.workers()}
    assert out["old"][:2] == (NUMPY["old"], str(envs["old"]))
    assert out["new"][:2] == (NUMPY["new"], str(envs["new"]))
    assert pythons == {"old": str(envs["old"]), "new": str(envs["new"])}


def test_numpy_arrays_cross_between_numpy_versions(envs):
    small, large = np.arange(10), np.arange(1_000_000, dtype=np.float32)  # a pickle, and shared memory
    with pp.Engine(pp.stage(np.asarray, name="echo", python=envs["old"])) as engine:
        for array in (small, large):
            back = engine.submit(array).result()
            np.testing.assert_array_equal(back, array)


def test_a_killed_worker_is_replaced_on_the_same_interpreter_and_its_item_retried(envs, tmp_path):
    stage = pp.stage(st.die_once, name="old", python=envs["old"], retries=1)
    with pp.Engine(stage) as engine:
        first_pid = engine.workers()[0]["pid"]
        version, python, pid = engine.submit(str(tmp_path / "marker")).result()
        assert engine.stats()["old"]["restarts"] == 1
    assert (version, python) == (NUMPY["old"], str(envs["old"]))
    assert pid != first_pid


def test_an_environment_without_parapipe_fails_at_start_naming_it(envs):
    stage = pp.stage(st.report, name="bare", python=envs["bare"])
    with pytest.raises(pp.WorkerStartupError) as info, pp.Engine(stage):
        pass
    message = str(info.value)
    assert str(envs["bare"]) in message and "'parapipe'" in message and "ModuleNotFoundError" in message


def test_a_stage_module_missing_there_is_named(envs):
    from . import _env_needs_pytest

    stage = pp.stage(_env_needs_pytest.passthrough, python=envs["old"])
    with pytest.raises(pp.WorkerStartupError) as info, pp.Engine(stage):
        pass
    message = str(info.value)
    assert str(envs["old"]) in message and "'pytest'" in message


def test_the_plan_shows_each_stages_interpreter(envs):
    from parapipe.plantree import format_tree

    with pp.Engine(pp.stage(st.report, name="old", python=envs["old"])) as engine:
        tree = format_tree({"stage": "old"}, engine.workers())
        assert str(envs["old"]) in tree
        assert str(envs["old"]) in engine.plan()
    assert os.path.exists(envs["old"])
