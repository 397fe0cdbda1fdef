"""A worker keeps the memory its calls free for the next call (`worker.malloc`): a model that
allocates and frees large temporaries per call no longer gets them as fresh pages each time."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

import parapipe as pp
from parapipe.worker.malloc import keep_freed_memory

_BLOCK = 64 << 20
"""Past the 32 MiB up to which glibc's own threshold rises: by default such a block is always
a fresh mapping, faulted in page by page."""


def _faults_of_large_temporaries(rounds: int) -> int:
    """Minor page faults of allocating, filling and freeing a large block ``rounds`` times."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        block = bytearray(_BLOCK)  # zero-filled: every page is touched
        del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _thp_always() -> bool:
    """Transparent huge pages for every mapping hide the difference (a 2 MiB page per fault)."""
    try:
        return "[always]" in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False


@pytest.mark.skipif(_thp_always(), reason="transparent huge pages are 'always' here: page faults cannot show it")
def test_a_worker_reuses_freed_memory_and_the_users_malloc_variables_win(monkeypatch: pytest.MonkeyPatch) -> None:
    pages = _BLOCK // resource.getpagesize()
    with pp.Engine(pp.stage(_faults_of_large_temporaries)) as engine:
        tuned = engine.run(5)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", str(128 << 10))  # glibc's own default, set by the user
    with pp.Engine(pp.stage(_faults_of_large_temporaries)) as engine:
        default = engine.run(5)
    assert tuned < 2 * pages  # the first block's pages only: the other four reuse them
    assert default > 4 * pages  # glibc's defaults: every block is new pages


def test_malloc_is_left_alone_when_the_user_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=131072")
    assert keep_freed_memory() is False
    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "65536")
    assert keep_freed_memory() is False
