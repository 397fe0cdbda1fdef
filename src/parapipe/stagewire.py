"""A stage on its way to its workers: pickled once in the parent (`dump_stage`), loaded in
each worker (`load_stage`), and where that fails, an error that says what to change.

The two usual mistakes are the user's, not parapipe's: a model or an open handle built in
``__init__`` (it cannot be pickled: build it in ``setup()``), and a stage defined inside the
script's ``if __name__ == "__main__":`` block (a spawned worker never runs it).
"""

from __future__ import annotations

import pickle
import re

from .errors import ConfigError
from .stage import Stage

__all__ = ["dump_stage", "load_stage"]


def dump_stage(stage: Stage) -> bytes:
    """The stage as its workers receive it; `load_stage` is the other end."""
    try:
        return pickle.dumps(stage, pickle.HIGHEST_PROTOCOL)
    except ConfigError:
        raise
    except Exception as exc:  # any pickling failure means the same fix
        raise ConfigError(
            f"stage {stage.stage_name!r} cannot be sent to its worker processes: {exc}. "
            "Keep __init__ arguments picklable and load models in setup(), not __init__"
        ) from exc


_MAIN_MODULE = re.compile(r"\b__(?:mp_)?main__\b")


def load_stage(stage_bytes: bytes) -> Stage:
    """The stage a worker serves, unpickled from the bytes its pool sent.

    A function or Stage class defined inside the script's ``if __name__ == "__main__":`` block
    exists only in the parent: a spawned worker imports the script as ``__mp_main__`` without
    running that block, and pickle's own error does not say so. That case becomes a
    `ConfigError` saying where to define the stage; any other failure is raised as it is.
    """
    try:
        loaded: Stage = pickle.loads(stage_bytes)
    except (AttributeError, pickle.UnpicklingError) as exc:
        if not _MAIN_MODULE.search(str(exc)):
            raise
        raise ConfigError(
            f"the stage cannot be loaded in its worker process ({exc}): it is defined where only the "
            'main script\'s process can see it, e.g. inside `if __name__ == "__main__":`, which a worker '
            "does not run (it imports the script as __mp_main__). Define the stage's function or Stage "
            "class at module level, above that block, or in a module of its own"
        ) from exc
    return loaded
