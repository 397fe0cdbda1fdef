"""The public surface is pinned: anything else is free to change."""

from __future__ import annotations

import subprocess
import sys

import parapipe as pp

PUBLIC = {
    "AsyncClient",
    "Client",
    "ConfigError",
    "Engine",
    "EngineClosed",
    "GraphError",
    "ItemError",
    "JournalError",
    "Parallel",
    "ParapipeError",
    "Pipeline",
    "ResultLost",
    "Sink",
    "Stage",
    "StageError",
    "StageFailed",
    "TaskTimeout",
    "TransportError",
    "WorkerContext",
    "WorkerDied",
    "WorkerStartupError",
    "current",
    "run",
    "stage",
}


def test_all_is_exactly_the_public_api_and_sorted():
    assert set(pp.__all__) == PUBLIC
    assert list(pp.__all__) == sorted(pp.__all__)


def test_public_names_claim_the_public_module():
    assert pp.StageError.__module__ == "parapipe"
    assert pp.Engine.__module__ == "parapipe"


def test_clients_load_lazily():
    """``import parapipe`` must work without the service extra: httpx loads on first use only.
    A fresh interpreter, since this one may have imported httpx for other tests."""
    probe = (
        "import sys, parapipe\n"
        "assert 'httpx' not in sys.modules, 'import parapipe loaded httpx'\n"
        "assert 'parapipe.service.client' not in sys.modules\n"
        "from parapipe.service.client import AsyncClient, Client\n"
        "assert parapipe.Client is Client and parapipe.AsyncClient is AsyncClient\n"
        "assert 'httpx' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_every_error_derives_from_the_root():
    errors = [getattr(pp, n) for n in PUBLIC if n.endswith(("Error", "Closed", "Failed", "Died", "Timeout", "Lost"))]
    assert errors and all(issubclass(e, pp.ParapipeError) for e in errors)
