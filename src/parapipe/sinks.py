"""Where ``parapipe run`` and `parapipe.run` put each item's outcome: one writer, each key once.

The seed's batch cleaner fed a writer process through a queue and stopped it with a sentinel, so
that one process owned the output file. Here the loop in `parapipe.runner` that reads ``map``'s
outcomes is that writer: every `Sink.write` happens on it, one after another, so a sink needs
no lock; and it closes the sink in a ``finally``, so Ctrl-C leaves a flushed, complete file.

Exactly once across crashes needs two records to agree. The journal knows which items are done
and keeps their results, so a rerun answers them without running them again; the sink knows
which keys it already holds, and the runner never hands it those again. A sink says so through
``written()``: the file sinks read their file back, cutting off a record torn by a kill. A sink
that cannot (a plain function, a class without ``written``) is wrapped in a `Ledger`, a side file
of the keys written, appended after each write returns: a kill between the two repeats that one
key, so a sink that must be exact implements ``written()``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .errors import ConfigError, ItemError

__all__ = ["CsvSink", "JsonlSink", "Ledger", "ParquetSink", "Sink", "load_sink", "open_sink", "written_keys"]


@runtime_checkable
class Sink(Protocol):
    """Receives each item's outcome, on one thread, once per key.

    ``outcome`` is the result, or the `ItemError` of a failed item. A sink may also define
    ``written() -> Iterable[str]``, the keys it already holds (asked once, before the run): then
    a rerun after a crash never hands it those keys again, exactly. Without it the runner keeps a
    `Ledger` for it.
    """

    def write(self, key: str, outcome: Any) -> None: ...

    def close(self) -> None: ...


def written_keys(sink: Sink) -> set[str]:
    """The keys ``sink`` already holds; a sink that cannot say holds none."""
    written = getattr(sink, "written", None)
    return set(written()) if callable(written) else set()


# -- file sinks -----------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """numpy scalars and arrays, sets, paths and bytes in results become plain JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _complete_bytes(path: str) -> bytes:
    """The file up to its last newline, cutting a record a kill left half-written off the disk."""
    if not os.path.exists(path):
        return b""
    with open(path, "rb") as f:
        data = f.read()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        os.truncate(path, len(complete))
    return complete


def _replace(path: str, write: Callable[[Any], None], *, newline: str | None = None) -> None:
    """Rewrite ``path`` whole through a temporary file, so a kill leaves the old or the new one."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8", newline=newline) as f:
        write(f)
    os.replace(tmp, path)


class JsonlSink:
    """One JSON line per item, ``{"key", "result"}`` or ``{"key", "error"}``; flushed per line.

    Args:
        path: the file; appended to, so a rerun continues it.
        retry_failed: drop the error lines first, so items retried after failing are written anew.
    """

    def __init__(self, path: str | os.PathLike[str], *, retry_failed: bool = False) -> None:
        self.path = os.fspath(path)
        lines = [json.loads(line) for line in _complete_bytes(self.path).splitlines() if line.strip()]
        if retry_failed and any("error" in line for line in lines):
            lines = [line for line in lines if "error" not in line]
            _replace(self.path, lambda f: f.writelines(json.dumps(line) + "\n" for line in lines))
        self._written = {line["key"] for line in lines}
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def written(self) -> set[str]:
        return self._written

    def write(self, key: str, outcome: Any) -> None:
        failed = isinstance(outcome, ItemError)
        record = {"key": key, "error": outcome.to_dict()} if failed else {"key": key, "result": outcome}
        self._file.write(json.dumps(record, default=jsonable) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _row(key: str, outcome: Any) -> dict[str, Any]:
    """A table row: the key, the result's fields (or one ``result`` column), and ``error``."""
    if isinstance(outcome, ItemError):
        return {"key": key, "error": f"{type(outcome).__name__}: {outcome.message}"}
    fields = outcome if isinstance(outcome, dict) else {"result": outcome}
    return {"key": key, **{str(k): _cell(v) for k, v in fields.items()}}


def _cell(value: Any) -> Any:
    """Scalars stay as they are; anything else becomes its JSON text (a table cell is flat)."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, default=jsonable)


def _columns(current: list[str], row: dict[str, Any]) -> list[str]:
    """``current`` plus the row's new fields, ``key`` first and ``error`` last."""
    fields = [c for c in current if c not in ("key", "error")]
    fields += [c for c in row if c not in ("key", "error") and c not in fields]
    return ["key", *fields, "error"]


class CsvSink:
    """One CSV row per item: ``key``, the result's fields (a dict result) or ``result``, ``error``.

    The header grows when a result brings a new field: the file is then rewritten whole (rare:
    once per new column), so every row lines up with it.

    Args:
        path: the file; appended to, so a rerun continues it.
        retry_failed: drop the rows with an error first, so retried items are written anew.
    """

    def __init__(self, path: str | os.PathLike[str], *, retry_failed: bool = False) -> None:
        self.path = os.fspath(path)
        self._columns, rows = _read_csv(self.path)
        if retry_failed and any(row.get("error") for row in rows):
            rows = [row for row in rows if not row.get("error")]
            self._rewrite(rows)
        self._written = {row["key"] for row in rows}
        self._file = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115 (closed in close())

    def written(self) -> set[str]:
        return self._written

    def write(self, key: str, outcome: Any) -> None:
        row = _row(key, outcome)
        columns = _columns(self._columns, row)
        if columns != self._columns:
            self._file.close()
            rows = _read_csv(self.path)[1]
            self._columns = columns
            self._rewrite(rows)
            self._file = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115
        csv.DictWriter(self._file, self._columns, lineterminator="\n").writerow(row)
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        def write(f: Any) -> None:
            out = csv.DictWriter(f, self._columns, lineterminator="\n")
            out.writeheader()
            out.writerows(rows)

        _replace(self.path, write, newline="")


def _read_csv(path: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The header and the complete rows; a row torn by a kill (even inside a quoted field that
    holds a newline) is cut off the file."""
    data = _complete_bytes(path)
    while data:
        try:
            reader = csv.DictReader(io.StringIO(data.decode("utf-8"), newline=""), strict=True)
            rows = list(reader)
            return list(reader.fieldnames or []), rows
        except csv.Error:  # the last newline was inside a quoted field: cut back one more line
            data = data[: data.rfind(b"\n", 0, len(data) - 1) + 1]
            os.truncate(path, len(data))
    return [], []


class ParquetSink:
    """One Parquet row per item, the columns of `CsvSink`; needs pyarrow.

    Parquet cannot be appended to, so the rows are kept and the file is written whole (through a
    temporary file) every ``checkpoint`` rows and on close, Ctrl-C included. A kill loses at most
    the rows since the last checkpoint; with a journal the rerun writes them from it without
    running their items again.
    """

    def __init__(self, path: str | os.PathLike[str], *, retry_failed: bool = False, checkpoint: int = 10_000) -> None:
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise ConfigError("a .parquet output needs pyarrow: pip install 'parapipe[sinks]'") from exc
        self.path = os.fspath(path)
        self._pq = pq
        self._rows: list[dict[str, Any]] = pq.read_table(self.path).to_pylist() if os.path.exists(self.path) else []
        if retry_failed:
            self._rows = [row for row in self._rows if not row.get("error")]
        self._written = {row["key"] for row in self._rows}
        self._checkpoint = checkpoint
        self._unsaved = 0

    def written(self) -> set[str]:
        return self._written

    def write(self, key: str, outcome: Any) -> None:
        self._rows.append(_row(key, outcome))
        self._unsaved += 1
        if self._unsaved >= self._checkpoint:
            self._save()

    def close(self) -> None:
        self._save()

    def _save(self) -> None:
        import pyarrow as pa

        columns: list[str] = []
        for row in self._rows:
            columns = _columns(columns, row)
        table = pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in self._rows])
        tmp = f"{self.path}.tmp"
        self._pq.write_table(table, tmp)
        os.replace(tmp, self.path)
        self._unsaved = 0


# -- user sinks -----------------------------------------------------------------------------


class Ledger:
    """A sink without ``written()``, plus a side file of the keys handed to it, so a rerun
    skips them. Each line is ``[key, ok]``: with ``retry_failed`` a key whose error was written
    is handed over again."""

    def __init__(self, sink: Sink, path: str | os.PathLike[str], *, retry_failed: bool = False) -> None:
        self.sink = sink
        self.path = os.fspath(path)
        entries = [json.loads(line) for line in _complete_bytes(self.path).splitlines() if line.strip()]
        self._written = {key for key, ok in entries if ok or not retry_failed}
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def written(self) -> set[str]:
        return self._written

    def write(self, key: str, outcome: Any) -> None:
        self.sink.write(key, outcome)
        self._file.write(json.dumps([key, not isinstance(outcome, ItemError)]) + "\n")
        self._file.flush()

    def close(self) -> None:
        try:
            self.sink.close()
        finally:
            self._file.close()


class _FunctionSink:
    """A plain ``write(key, outcome)`` function as a sink."""

    def __init__(self, write: Callable[[str, Any], Any]) -> None:
        self._write = write

    def write(self, key: str, outcome: Any) -> None:
        self._write(key, outcome)

    def close(self) -> None:
        return None


_BY_SUFFIX: dict[str, Callable[..., Sink]] = {
    ".jsonl": JsonlSink, ".ndjson": JsonlSink, ".csv": CsvSink, ".parquet": ParquetSink,
}  # fmt: skip


def load_sink(spec: str | Any, out: str | None = None) -> Sink:
    """The sink ``--sink MODULE:NAME`` names: a class (made with ``out`` when given), an object
    with ``write`` and ``close``, or a plain ``write(key, outcome)`` function."""
    obj = spec
    if isinstance(spec, str):
        import importlib

        module_name, _, attr = spec.partition(":")
        if not module_name or not attr:
            raise ConfigError(f"expected --sink MODULE:NAME (e.g. myapp.sinks:ExcelSink), got {spec!r}")
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    if isinstance(obj, type):
        return obj(out) if out is not None else obj()
    if hasattr(obj, "write") and hasattr(obj, "close"):
        return obj
    if callable(obj):
        return _FunctionSink(obj)
    raise ConfigError(f"sink {spec!r} is neither a class, an object with write() and close(), nor a function")


def open_sink(
    out: str | os.PathLike[str] | None,
    sink: str | Any = None,
    *,
    retry_failed: bool = False,
    ledger: str | os.PathLike[str] | None = None,
) -> Sink:
    """The sink for a run: ``sink`` when given (see `load_sink`), else a file sink chosen by
    ``out``'s extension. A sink that cannot say what it wrote gets a `Ledger` at ``ledger``
    (default: next to ``out``)."""
    path = os.fspath(out) if out is not None else None
    if sink is None:
        if path is None:
            raise ConfigError("give an output file (--out results.jsonl / .csv / .parquet) or a --sink")
        suffix = Path(path).suffix.lower()
        if suffix not in _BY_SUFFIX:
            raise ConfigError(
                f"no built-in sink writes {suffix or 'files without an extension'!r}; use one of "
                f"{sorted(_BY_SUFFIX)} or write a sink class and pass --sink MODULE:NAME (see docs/sinks.md)"
            )
        return _BY_SUFFIX[suffix](path, retry_failed=retry_failed)
    made = load_sink(sink, path)
    if callable(getattr(made, "written", None)):
        return made
    ledger = ledger if ledger is not None else (f"{path}.keys" if path is not None else None)
    if ledger is None:
        made.close()
        raise ConfigError("a sink without written() needs --out or --journal, where its ledger of keys is kept")
    return Ledger(made, ledger, retry_failed=retry_failed)
