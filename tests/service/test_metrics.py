"""/metrics is valid Prometheus text with per-stage items, errors, busy time, queues and latency."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Server


def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url + "/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_parse_and_count_items_and_errors(pipeline_server: Server) -> None:
    before = _samples(pipeline_server.url)
    with httpx.Client(base_url=pipeline_server.url) as http:
        for item in [1, 2, 3, "boom"]:
            http.post("/v1/run", json={"item": item})
    after = _samples(pipeline_server.url)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0.0)

    assert delta("parapipe_stage_items_total", stage="describe") == 3
    assert delta("parapipe_stage_errors_total", stage="describe") == 1
    assert delta("parapipe_stage_items_total", stage="size") == 3
    assert after[("parapipe_stage_busy_seconds_total", (("stage", "describe"),))] > 0
    assert after[("parapipe_stage_queue_depth", (("stage", "kind"),))] == 0
    assert after[("parapipe_stage_latency_seconds", (("quantile", "0.99"), ("stage", "describe")))] > 0
    assert after[("parapipe_stage_restarts_total", (("stage", "size"),))] == 0
    assert after[("parapipe_stage_workers", (("stage", "describe"), ("state", "ready")))] == 1
    assert after[("parapipe_service_ready", ())] == 1
    assert ("parapipe_jobs", (("state", "done"),)) in after
    assert ("parapipe_service_rejected_total", ()) in after


def test_metrics_have_the_prometheus_content_type(pipeline_server: Server) -> None:
    response = httpx.get(pipeline_server.url + "/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
