"""`load_stage`: a stage the worker cannot find in the main script says where to define it."""

from __future__ import annotations

import pickle
import sys
import types

import pytest

import parapipe as pp
from parapipe.stagewire import load_stage


@pytest.fixture
def script(monkeypatch):
    """A stand-in for the user's script as a spawned worker imports it: ``__mp_main__``."""
    module = types.ModuleType("__mp_main__")
    monkeypatch.setitem(sys.modules, "__mp_main__", module)
    return module


def _define(module, obj, name):
    obj.__module__, obj.__qualname__, obj.__name__ = module.__name__, name, name
    setattr(module, name, obj)
    return obj


def _plain(x):
    return x


class _Model(pp.Stage):
    def process(self, item):
        return item


def _sent_then_hidden(script, build):
    """The stage's bytes as the parent sends them; then the script loses the definition, as the
    worker's copy of the script does when it sits under ``if __name__ == "__main__":``."""
    data = pickle.dumps(build())
    for name in [n for n in vars(script) if not n.startswith("__")]:
        delattr(script, name)
    return data


@pytest.mark.parametrize("kind", ["function", "decorated", "class"])
def test_a_stage_defined_only_under_the_main_guard_says_to_move_it(script, kind):
    def build():
        if kind == "class":
            return _define(script, type("Nested", (_Model,), {}), "Nested")()
        fn = _define(script, types.FunctionType(_plain.__code__, {}), "nested")
        if kind == "decorated":  # ``@pp.stage``: the script's name is bound to the stage, not the function
            script.nested = pp.stage(fn)
            return script.nested
        return pp.stage(fn)

    data = _sent_then_hidden(script, build)
    with pytest.raises(pp.ConfigError, match=r"__name__ == \"__main__\".*module level") as info:
        load_stage(data)
    assert "__mp_main__" in str(info.value)
    assert isinstance(info.value.__cause__, (AttributeError, pickle.UnpicklingError))


def test_stages_that_load_come_back_and_other_failures_pass_through(script):
    assert load_stage(pickle.dumps(_Model().options(replicas=2))).replicas == 2
    other = types.ModuleType("elsewhere")
    sys.modules["elsewhere"] = other
    try:
        other.Gone = _define(other, type("Gone", (_Model,), {}), "Gone")
        data = pickle.dumps(other.Gone())
        del other.Gone
        with pytest.raises(AttributeError, match="Gone"):
            load_stage(data)
    finally:
        del sys.modules["elsewhere"]
