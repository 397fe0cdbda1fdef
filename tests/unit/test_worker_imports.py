"""A worker imports only what a worker needs: every module it loads is paid again by every start,
restart and replica added, before ``setup()`` can run.

Fresh interpreters, since this one has long imported the engine for other tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ENGINE_SIDE = (
    "parapipe.engine",
    "parapipe.journal",
    "parapipe.recovery",
    "parapipe.service",
    "parapipe.audio",
    "parapipe.cli",
    "asyncio",
    "sqlite3",
    "tqdm",
    "psutil",
    "numpy",
)


def _run(code: str, tmp_path: Path) -> str:
    """Run ``code`` as a script in a fresh interpreter; its standard output."""
    script = tmp_path / "probe.py"
    script.write_text(code)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _engine_side(modules: str) -> set[str]:
    """The modules of ``ENGINE_SIDE`` (or under them) among ``modules``, one name a line."""
    return {m for m in modules.split() if any(m == heavy or m.startswith(heavy + ".") for heavy in ENGINE_SIDE)}


def test_the_worker_module_imports_no_engine_side_module(tmp_path: Path) -> None:
    code = "import sys\nimport parapipe.worker.child\nprint('\\n'.join(sys.modules))\n"
    assert _engine_side(_run(code, tmp_path)) == set()


def test_a_running_worker_has_imported_no_engine_side_module(tmp_path: Path) -> None:
    """The real start: spawn re-imports the user's script (``import parapipe as pp``) and unpickles
    the stage; the stage reports what its process holds once ``setup()`` has run."""
    code = (
        "import sys\n"
        "import parapipe as pp\n"
        "class Probe(pp.Stage):\n"
        "    def setup(self):\n"
        "        self.modules = list(sys.modules)\n"
        "    def process(self, item):\n"
        "        return self.modules\n"
        "if __name__ == '__main__':\n"
        "    with pp.Engine(Probe()) as engine:\n"
        "        print('\\n'.join(engine.run(0)))\n"
    )
    assert _engine_side(_run(code, tmp_path)) == set()


def test_lazy_names_resolve_to_their_objects_and_claim_the_public_module(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import parapipe as pp\n"
        "assert 'parapipe.engine' not in sys.modules and 'parapipe.graph' not in sys.modules\n"
        "from parapipe.engine import Engine\n"
        "from parapipe.graph import Parallel, Pipeline\n"
        "assert pp.Engine is Engine and pp.Pipeline is Pipeline and pp.Parallel is Parallel\n"
        "assert Engine.__module__ == Pipeline.__module__ == Parallel.__module__ == 'parapipe'\n"
        "import pickle\n"
        "assert pickle.loads(pickle.dumps(Pipeline)) is Pipeline  # found again through parapipe.Pipeline\n"
        "import parapipe.stage\n"
        "assert callable(pp.stage) and pp.stage.__module__ == 'parapipe', pp.stage\n"
        "assert set(pp.__all__) <= set(dir(pp))\n"
    )
    _run(code, tmp_path)


CORE = {
    "errors", "config", "context", "progress", "batching", "resources", "stage", "stagewire", "graph", "journal",
    "plantree", "gpus", "nvml", "priority",
}  # fmt: skip
ABOVE_THE_WORKER = {
    "scheduler", "pools", "mapper", "itemkeys", "recovery", "journaled", "relay", "autotune", "engine", "ray",
    "cli", "runner", "sinks", "follow", "_apps", "_demo",
}  # fmt: skip


def test_the_core_and_the_worker_layer_import_nothing_above_them() -> None:
    """docs/architecture.md's layers, read from the source: core <- worker <- the rest. Every
    import statement counts, lazy ones included (a worker would pay for it when it runs)."""
    from tests.unit.test_layers import _import_graph

    def layer(module: str) -> str:
        name = module.removeprefix("parapipe.")
        top = name.split(".")[0]
        if module == "parapipe" or top in ABOVE_THE_WORKER or top in ("service", "audio"):
            return "above"
        if top == "worker":
            return "worker"
        assert name in CORE or top in ("transport", "journal"), (
            f"{module}: place it in a layer here and in docs/architecture.md"
        )
        return "core"

    rank = {"core": 0, "worker": 1, "above": 2}
    graph = _import_graph()
    upward = {(m, t) for m, targets in graph.items() for t in targets if rank[layer(t)] > rank[layer(m)]}
    assert upward == set()
