"""The public surface is pinned: anything else is free to change."""

from __future__ import annotations

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
    "Stage",
    "StageError",
    "StageFailed",
    "TaskTimeout",
    "TransportError",
    "WorkerContext",
    "WorkerDied",
    "WorkerStartupError",
    "current",
    "stage",
}


def test_all_is_exactly_the_public_api_and_sorted():
    assert set(pp.__all__) == PUBLIC
    assert list(pp.__all__) == sorted(pp.__all__)


def test_public_names_claim_the_public_module():
    assert pp.StageError.__module__ == "parapipe"
    assert pp.Engine.__module__ == "parapipe"


def test_clients_load_lazily():
    assert pp.Client.__name__ == "Client" and pp.AsyncClient.__name__ == "AsyncClient"


def test_every_error_derives_from_the_root():
    errors = [getattr(pp, n) for n in PUBLIC if n.endswith(("Error", "Closed", "Failed", "Died", "Timeout", "Lost"))]
    assert errors and all(issubclass(e, pp.ParapipeError) for e in errors)
