"""Workers on another Python interpreter: a stage's own virtualenv or conda env (``python=``).

Why not ``multiprocessing.set_executable``: it sets a module global of ``multiprocessing.spawn``,
so it would move every stage (and the resource tracker, if that starts later) to the other
interpreter. Here the per-stage choice lives in the process object: `InterpreterProcess` is
a spawn process whose Popen (`_InterpreterPopen`) launches the stage's interpreter, the rest of
the spawn protocol unchanged (the same bootstrap, pipe, sentinel and resource tracker).

Two things differ from a plain spawn, both because the other environment is *other*:

* **sys.path.** Spawn hands the child the parent's ``sys.path`` whole, which would import the
  parent's site-packages (its numpy, its parapipe) and defeat the point. The child gets its
  own default path instead, led by the parent's entries that are the user's (the script's
  directory, ``PYTHONPATH`` entries), never the parent's installation nor any entry holding a
  parapipe package: the environment brings its own parapipe, checked by `probe`.
* **the main script** is not re-imported there: its imports belong to the parent's environment.
  A stage on another interpreter lives in a module.

`probe` runs the interpreter once per engine and stage before any worker starts: it learns the
interpreter's default ``sys.path`` and checks that its parapipe imports and speaks our
`protocol.VERSION`, so a missing or stale parapipe is one clear `WorkerStartupError`, not a
worker that dies while unpickling its bootstrap.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from multiprocessing import popen_spawn_posix, reduction, spawn, util
from multiprocessing.context import SpawnContext, SpawnProcess, set_spawning_popen
from pathlib import Path
from typing import Any

from ..errors import ConfigError, WorkerStartupError
from . import protocol

__all__ = ["Interpreter", "InterpreterContext", "resolve_python"]

_PROBE_TIMEOUT = 60.0
_PROBE = r"""
import json, sys
out = {"path": [p for p in sys.path if p], "version": sys.version.split()[0]}
sys.path[:0] = json.loads(sys.argv[1])
try:
    from parapipe.worker import protocol
    out["protocol"] = getattr(protocol, "VERSION", None)
    import parapipe
    out["parapipe"] = str(getattr(parapipe, "__file__", "?"))
except BaseException as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
    out["module"] = getattr(exc, "name", None) or "parapipe"
print(json.dumps(out))
"""


def resolve_python(python: str | os.PathLike[str], stage: str) -> str:
    """The interpreter a ``python=`` option names: the path itself, ``DIR/bin/python`` of an
    env directory, or a name on ``PATH``. Symlinks are kept: a venv's ``bin/python`` links to
    its base interpreter, and only the link's path makes it that venv."""
    path = Path(python).expanduser()
    if path.is_dir():
        for name in ("bin/python", "bin/python3"):
            candidate = path / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate.absolute())
        raise ConfigError(
            f"stage {stage!r}: python={str(python)!r} is a directory without bin/python; "
            "give a virtualenv or conda env directory, or the interpreter itself"
        )
    if path.is_file() and os.access(path, os.X_OK):
        return str(path.absolute())
    found = shutil.which(str(python)) if os.sep not in str(python) else None
    if found is None:
        raise ConfigError(f"stage {stage!r}: python={str(python)!r} is not an executable interpreter")
    return found


@dataclass(frozen=True)
class Interpreter:
    """A checked interpreter and the ``sys.path`` its workers start with."""

    executable: str
    sys_path: tuple[str, ...]
    version: str


_probed: dict[tuple[str, tuple[str, ...]], Interpreter] = {}
_probe_lock = threading.Lock()


def probe(executable: str, stage: str) -> Interpreter:
    """Check ``executable`` can run this stage's workers (see the module docstring); cached."""
    forwarded = tuple(_forwarded_path())
    key = (executable, forwarded)
    with _probe_lock:
        if key in _probed:
            return _probed[key]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    try:
        done = subprocess.run(
            [executable, "-c", _PROBE, json.dumps(list(forwarded))],
            env=env, capture_output=True, text=True, timeout=_PROBE_TIMEOUT, check=False,
        )  # fmt: skip
        out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        detail = locals().get("done")
        stderr = detail.stderr.strip()[-2000:] if detail is not None else ""
        raise WorkerStartupError(
            f"stage {stage!r}: the interpreter {executable} could not be run ({type(exc).__name__}: {exc}) {stderr}"
        ) from exc
    if "error" in out:
        raise WorkerStartupError(
            f"stage {stage!r}: its interpreter {executable} cannot import {out['module']!r} "
            f"({out['error']}), which its workers need. Install parapipe (the same version as here) and "
            f"the stage's libraries into that environment, e.g. `{executable} -m pip install parapipe`"
        )
    if out.get("protocol") != protocol.VERSION:
        raise WorkerStartupError(
            f"stage {stage!r}: the parapipe at {out.get('parapipe')} under {executable} speaks worker protocol "
            f"{out.get('protocol')}, this one speaks {protocol.VERSION}: install the same parapipe version there"
        )
    found = Interpreter(executable, (*forwarded, *(p for p in out["path"] if p not in forwarded)), out["version"])
    with _probe_lock:
        _probed[key] = found
    return found


def _forwarded_path() -> list[str]:
    """The parent's ``sys.path`` entries that are the user's, not the parent's installation."""
    installed = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    out = []
    for entry in sys.path:
        entry = os.path.abspath(entry or os.getcwd())
        if any(_under(entry, root) for root in installed) or os.path.isdir(os.path.join(entry, "parapipe")):
            continue
        if entry not in out:
            out.append(entry)
    return out


def _under(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, os.path.abspath(root)]) == os.path.abspath(root)
    except ValueError:
        return False


class _InterpreterPopen(popen_spawn_posix.Popen):
    """``popen_spawn_posix.Popen._launch`` with the stage's interpreter and path (see above)."""

    def _launch(self, process_obj: Any) -> None:
        from multiprocessing import resource_tracker

        interp: Interpreter = process_obj._interpreter
        tracker_fd = resource_tracker.getfd()
        self._fds.append(tracker_fd)  # type: ignore[attr-defined]  # set by popen_fork.Popen.__init__
        prep_data = spawn.get_preparation_data(process_obj._name)
        prep_data["sys_path"] = list(interp.sys_path)
        prep_data.pop("init_main_from_path", None)
        prep_data.pop("init_main_from_name", None)
        fp = io.BytesIO()
        set_spawning_popen(self)
        try:
            reduction.dump(prep_data, fp)
            reduction.dump(process_obj, fp)
        finally:
            set_spawning_popen(None)
        parent_r = child_w = child_r = parent_w = None
        try:
            parent_r, child_w = os.pipe()
            child_r, parent_w = os.pipe()
            cmd = spawn.get_command_line(tracker_fd=tracker_fd, pipe_handle=child_r)
            exe = os.fsencode(interp.executable) if isinstance(cmd[0], bytes) else interp.executable  # 3.11+: bytes
            cmd[0] = exe
            self._fds.extend([child_r, child_w])  # type: ignore[attr-defined]
            self.pid = util.spawnv_passfds(exe, cmd, self._fds)  # type: ignore[attr-defined, arg-type]  # typeshed gap
            self.sentinel = parent_r
            with open(parent_w, "wb", closefd=False) as f:
                f.write(fp.getbuffer())
        finally:
            fds = [fd for fd in (parent_r, parent_w) if fd is not None]
            self.finalizer = util.Finalize(self, util.close_fds, fds)  # type: ignore[attr-defined]  # typeshed gap
            for fd in (child_r, child_w):
                if fd is not None:
                    os.close(fd)


class InterpreterProcess(SpawnProcess):
    """A spawn process started on ``_interpreter`` (set by `InterpreterContext.Process`)."""

    _interpreter: Interpreter

    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        return _InterpreterPopen(process_obj)


class InterpreterContext(SpawnContext):
    """A spawn context for one stage's interpreter: ``Process`` and ``Pipe`` as usual."""

    def __init__(self, interpreter: Interpreter) -> None:
        super().__init__()
        self.interpreter = interpreter

    def Process(self, *args: Any, **kwargs: Any) -> InterpreterProcess:  # type: ignore[override]
        proc = InterpreterProcess(*args, **kwargs)
        proc._interpreter = self.interpreter
        return proc
