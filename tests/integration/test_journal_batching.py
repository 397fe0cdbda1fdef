"""What keeps a journaled map fast: cheap items are claimed and recorded in chunks, a resume
answers finished items without a write, and the writer renews leases and gives back the rest."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import parapipe as pp
from parapipe.journal import Journal, State
from parapipe.recovery import JournaledRunner

from . import _stages as S

WAIT = 60


class CountingJournal(Journal):
    """A journal that counts the calls a map makes to it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: Counter[str] = Counter()
        self.renewed = threading.Event()

    def claim(self, keys: Any, **kwargs: Any) -> Any:
        self.calls["claim"] += 1
        return super().claim(keys, **kwargs)

    def apply(self, writes: Any) -> Any:
        self.calls["apply"] += 1
        return super().apply(writes)

    def renew(self) -> int:
        self.renewed.set()
        return super().renew()


def test_cheap_items_are_claimed_and_recorded_in_chunks_and_a_resume_writes_nothing(tmp_path: Path) -> None:
    n = 4000
    with pp.Engine(pp.stage(S.add_one, replicas=2)) as engine:
        list(engine.map(range(500)))  # measures the stage: cheap, so map chunks
        with CountingJournal(tmp_path / "run.db", max_result_bytes=None) as journal:
            assert list(engine.map(range(n), journal=journal, key=str)) == [i + 1 for i in range(n)]
            first = dict(journal.calls)
            assert journal.counts()[State.DONE] == n
        with CountingJournal(tmp_path / "run.db", max_result_bytes=None) as journal:
            assert list(engine.map(range(n), journal=journal, key=str)) == [i + 1 for i in range(n)]
            again = dict(journal.calls)
    assert first["claim"] <= n // 50, first  # one claim per chunk, not per item
    assert first["apply"] <= n // 50, first
    assert again == {}, "a resume of done items claims and writes nothing"


def test_the_writer_renews_leases_and_close_gives_back_what_did_not_finish(tmp_path: Path) -> None:
    with CountingJournal(tmp_path / "run.db", lease=0.3, owner="me") as journal:
        journal.claim(["a", "b"])
        runner = JournaledRunner(journal, lambda *args: pp.ItemError("never called"))  # type: ignore[arg-type,return-value]
        assert journal.renewed.wait(WAIT), "the writer never renewed the leases"
        runner.close()
        assert {r.key: (r.state, r.owner) for r in journal.records()} == {
            "a": (State.QUEUED, None),
            "b": (State.QUEUED, None),
        }


def test_breaking_out_of_a_journaled_map_leaves_nothing_running(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    with pp.Engine(pp.stage(S.add_one, replicas=2)) as engine:
        for i, _ in enumerate(engine.map(range(200), journal=db, key=str, max_inflight=8)):
            if i == 20:
                break
    with Journal(db) as journal:
        counts = journal.counts()
    assert counts[State.RUNNING] == 0, counts
    assert counts[State.DONE] >= 21
