"""Clean chat-log files in parallel; one writer puts every kept row into one CSV.

    parapipe run clean:clean data --sink clean:Combined --out cleaned.csv --journal clean.db --progress
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import parapipe as pp

SYSTEM = {"我通过了好友请求,现在你俩可以开始聊天了", "不支持此消息,请在手机上查看", "微信红包"}
COLUMNS = ["source", "rows_in_file", "agent_id", "customer_id", "is_agent", "message"]


def read(path: str) -> list[dict[str, str]]:
    if path.endswith(".xlsx"):
        from openpyxl import load_workbook

        header, *rows = load_workbook(path, read_only=True).active.iter_rows(values_only=True)
        return [{h: "" if v is None else str(v) for h, v in zip(header, row, strict=False)} for row in rows]
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pp.stage(replicas=max(1, (os.cpu_count() or 2) - 1))
def clean(path: str) -> list[dict[str, str]]:
    """The rows worth keeping: no system notice, no empty message, no duplicate."""
    seen: set[tuple[str, ...]] = set()
    kept = []
    for row in read(path):
        row = {k: v.strip() for k, v in row.items()}
        signature = tuple(row.values())
        if row["message"] and row["message"] not in SYSTEM and signature not in seen:
            seen.add(signature)
            kept.append(row)
    return kept


class Combined:
    """The one writer: every file's kept rows in one CSV, tagged with their source file.

    ``written()`` is what makes a resume exact: a source counts as written only when all of its
    ``rows_in_file`` rows are in the file; a block cut short by a kill is dropped and rewritten.
    """

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        rows = self._complete_rows()
        self._written = {row["source"] for row in rows}
        new = not self.out.exists()
        self._file = open(self.out, "a", newline="", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self._csv = csv.DictWriter(self._file, COLUMNS, lineterminator="\n")
        if new:
            self._csv.writeheader()

    def written(self) -> set[str]:
        return self._written

    def write(self, key: str, outcome: Any) -> None:
        if isinstance(outcome, pp.ItemError):
            print(f"could not clean {key}: {outcome}")
            return
        self._csv.writerows({"source": key, "rows_in_file": len(outcome), **row} for row in outcome)
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def _complete_rows(self) -> list[dict[str, str]]:
        if not self.out.exists():
            return []
        with open(self.out, newline="", encoding="utf-8") as f:
            text = f.read()
        lines = list(csv.DictReader(text[: text.rfind("\n") + 1].splitlines()))
        count: dict[str, int] = {}
        for row in lines:
            count[row["source"]] = count.get(row["source"], 0) + 1
        rows = [row for row in lines if count[row["source"]] == int(row["rows_in_file"])]
        if len(rows) != len(lines) or not text.endswith("\n"):
            with open(self.out, "w", newline="", encoding="utf-8") as f:
                out = csv.DictWriter(f, COLUMNS, lineterminator="\n")
                out.writeheader()
                out.writerows(rows)
        return rows
