"""Seed 004 by hand: rows in SQLite, each task marks itself DOING / DONE / FAILED around the work."""

import json
import logging
import random
import sqlite3
import sys
import time
from multiprocessing import Pool

DB = "tasks-handrolled.db"


def db():
    conn = sqlite3.connect(DB, timeout=30, isolation_level=None)
    conn.execute("create table if not exists task (id text primary key, body text, status text)")
    return conn


def mission(task):
    logging.basicConfig(level=logging.INFO, format="%(process)d %(message)s")
    conn = db()
    conn.execute("update task set status='DOING' where id=?", (task["id"],))
    try:
        logging.info("task %s: %s", task["id"], task["content"])
        time.sleep(random.random() * 0.05)
        if task.get("fail"):
            raise RuntimeError(f"task {task['id']} cannot be done")
        conn.execute("update task set status='DONE' where id=?", (task["id"],))
    except Exception as e:
        logging.error("error: %s", e)
        conn.execute("update task set status='FAILED' where id=?", (task["id"],))


if __name__ == "__main__":
    conn = db()
    with open(sys.argv[1]) as lines:
        for line in lines:
            task = json.loads(line)
            conn.execute("insert or ignore into task values (?, ?, 'PENDING')", (task["id"], line))
    todo = [json.loads(b) for (b,) in conn.execute("select body from task where status in ('PENDING', 'DOING')")]
    with Pool(4) as pool:
        pool.map(mission, todo)
