"""The graphs a command line can name: ``MODULE:NAME``, or a short name for one that ships here.

The alias table lives with the command lines (``parapipe plan/run`` and ``parapipe serve``),
not in `parapipe.graph`: the core knows no application, not even by a string.
"""

from __future__ import annotations

import sys
from typing import Any

from .graph import load_graph

__all__ = ["GRAPH_ALIASES", "load_cli_graph"]

GRAPH_ALIASES = {"audio": "parapipe.audio.graph:analysis_graph"}
"""Short names for graphs that ship with parapipe: ``parapipe serve audio``."""


def load_cli_graph(spec: str) -> Any:
    """The graph a command line names (an alias or ``MODULE:NAME``, see `load_graph`).

    Puts the current directory on ``sys.path`` first, as ``python -m`` does: ``parapipe serve
    myapp.graphs:pipeline`` finds ``./myapp`` even when run through the installed ``parapipe``
    script, whose ``sys.path`` starts with the script's own directory instead.
    """
    if "." not in sys.path:
        sys.path.insert(0, ".")
    return load_graph(spec, GRAPH_ALIASES)
