"""A DB-tracked task pool: tasks are rows of the journal, each queued -> running -> done/failed.

    python make_tasks.py 200 > tasks.jsonl
    parapipe -v run tasks:mission --items tasks.jsonl --journal tasks.db --out done.jsonl
    parapipe jobs tasks.db --state failed
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import parapipe as pp

log = logging.getLogger("tasks")


@pp.stage(replicas=4)
def mission(task: dict[str, Any]) -> dict[str, Any]:
    """The seed's ``mission``: no UPDATE statements, the journal records every state change."""
    started = time.perf_counter()
    log.info("task %s: %s", task["id"], task["content"])
    time.sleep(random.random() * float(task.get("seconds", 0.05)))
    if task.get("fail"):
        raise RuntimeError(f"task {task['id']} cannot be done: {task['content']!r}")
    return {"id": task["id"], "seconds": round(time.perf_counter() - started, 3)}
