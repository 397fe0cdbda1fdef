"""Pickles that cross environments with different library versions (``python=`` stages).

NumPy 2 pickles arrays by reference to ``numpy._core``, a module numpy 1.x lacks (it calls it
``numpy.core``); numpy 2 reads 1.x pickles by itself. A worker on its own interpreter installs
this finder, so a numpy 2 parent can send arrays to a numpy 1.x stage: the names resolve to
``numpy.core`` there. It imports numpy only when such a pickle arrives.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any

_PREFIX = "numpy._core"


class _NumpyCoreAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != _PREFIX and not fullname.startswith(_PREFIX + "."):
            return None
        import numpy

        if int(numpy.__version__.split(".")[0]) >= 2:
            return None  # the real module: let the other finders find it
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module("numpy.core" + spec.name[len(_PREFIX) :])

    def exec_module(self, module: ModuleType) -> None:
        """The alias is numpy.core's own module, already executed."""


def install() -> None:
    if not any(isinstance(f, _NumpyCoreAlias) for f in sys.meta_path):
        sys.meta_path.insert(0, _NumpyCoreAlias())
