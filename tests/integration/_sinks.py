"""User sinks for the ``parapipe run`` sink tests; each can stop its own run at the Nth write
(``PARAPIPE_TEST_STOP_AT``) with the signal named by ``PARAPIPE_TEST_STOP_WITH``, so the test
knows exactly where the run died without waiting on anything."""

from __future__ import annotations

import json
import os
import signal
from typing import Any


def _stop_if_due(count: int) -> None:
    if count == int(os.environ.get("PARAPIPE_TEST_STOP_AT", "0")):
        os.kill(os.getpid(), getattr(signal, os.environ.get("PARAPIPE_TEST_STOP_WITH", "SIGKILL")))


class ExactSink:
    """Appends ``{"key", "ok"}`` lines to its file and reads them back: it knows what it wrote."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.count = 0
        self._file = open(out, "a", encoding="utf-8")  # noqa: SIM115

    def written(self) -> set[str]:
        with open(self.out, encoding="utf-8") as f:
            return {json.loads(line)["key"] for line in f if line.endswith("\n")}

    def write(self, key: str, outcome: Any) -> None:
        self._file.write(json.dumps({"key": key, "outcome": str(outcome)}) + "\n")
        self._file.flush()
        self.count += 1
        _stop_if_due(self.count)  # killed right after a write: the hardest moment

    def close(self) -> None:
        self._file.close()
        with open(f"{self.out}.closed", "w", encoding="utf-8") as f:
            f.write(str(self.count))


class ForgetfulSink:
    """Appends keys to its file but cannot say what it wrote: the runner keeps a ledger."""

    def __init__(self, out: str) -> None:
        self._file = open(out, "a", encoding="utf-8")  # noqa: SIM115
        self.count = 0

    def write(self, key: str, outcome: Any) -> None:
        self.count += 1
        _stop_if_due(self.count)  # killed before the write: the ledger stays exact
        self._file.write(key + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
