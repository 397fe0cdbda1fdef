from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import psutil
import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Tests marked ``slow`` run in CI (where ``CI`` is set, so ``CI=1 pytest`` runs them all) and
    when a marker expression asks (``-m slow``); a plain local ``pytest`` deselects them."""
    if not os.environ.get("CI") and not config.option.markexpr:
        config.option.markexpr = "not slow"


@pytest.fixture(autouse=True)
def no_leaked_children():
    """Every test must leave no worker process behind (loky's leak check)."""
    yield from leak_check(_is_worker, timeout=10)


def leak_check(ours: Callable[[psutil.Process], bool], timeout: float) -> Iterator[None]:
    """The body of a leak-check fixture: the processes ``ours`` recognises among those started
    during the test must end within ``timeout`` s (they are killed, and the test fails)."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    leaked = [p for p in psutil.Process().children(recursive=True) if p.pid not in before and ours(p)]
    alive = psutil.wait_procs(leaked, timeout=timeout)[1]
    for p in alive:
        p.kill()
    assert not alive, f"worker processes left behind: {alive}"


def _is_worker(p: psutil.Process) -> bool:
    try:
        cmd = " ".join(p.cmdline())
    except psutil.Error:
        return False
    return "resource_tracker" not in cmd and "forkserver" not in cmd
