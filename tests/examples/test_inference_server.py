"""examples/inference_server: ``parapipe serve server:graph`` answers the example client's sync
calls and async jobs, and the model sees batches larger than one."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from .conftest import EXAMPLES, example_env

service = pytest.importorskip("tests.service.conftest", reason="the service extra is not installed")


@pytest.mark.slow
def test_the_client_gets_sync_answers_and_batched_async_jobs(tmp_path):
    server = service.start_server("server:graph", tmp_path, "--start-method", "fork",
                                  env=example_env("inference_server"))  # fmt: skip
    try:
        client = [sys.executable, str(EXAMPLES / "inference_server" / "client.py"), server.url]
        done = subprocess.run(client, env=example_env("inference_server"), capture_output=True, text=True, timeout=120)
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr + server.log_text()
    assert "run: {'label'" in done.stdout and "300 async jobs answered" in done.stdout
    sizes = ast.literal_eval(done.stdout.rsplit("batch sizes the model saw: ", 1)[1])
    assert max(sizes) > 1, "requests arriving together must share a batch"
