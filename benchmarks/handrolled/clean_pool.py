"""Seed 003 (cleaning) by hand: a pool cleans, one writer process gets rows through a queue and
stops on a sentinel. Nothing is remembered: a crash means starting over."""

import csv
import sys
from multiprocessing import Pool, Process, Queue
from pathlib import Path

from tqdm import tqdm

SYSTEM = {"我通过了好友请求,现在你俩可以开始聊天了", "不支持此消息,请在手机上查看", "微信红包"}


def read(path):
    if path.endswith(".xlsx"):
        from openpyxl import load_workbook

        header, *rows = load_workbook(path, read_only=True).active.iter_rows(values_only=True)
        return [{h: "" if v is None else str(v) for h, v in zip(header, row, strict=False)} for row in rows]
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def clean(path):
    seen, kept = set(), []
    for row in read(path):
        row = {k: v.strip() for k, v in row.items()}
        if row["message"] and row["message"] not in SYSTEM and tuple(row.values()) not in seen:
            seen.add(tuple(row.values()))
            kept.append({"source": path, **row})
    return kept


def writer(queue, out):
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, ["source", "agent_id", "customer_id", "is_agent", "message"])
        w.writeheader()
        while (rows := queue.get()) is not None:
            w.writerows(rows)


if __name__ == "__main__":
    paths = sorted(str(p) for p in Path(sys.argv[1]).iterdir())
    queue = Queue()
    proc = Process(target=writer, args=(queue, "cleaned.csv"))
    proc.start()
    with Pool() as pool:
        for rows in tqdm(pool.imap_unordered(clean, paths), total=len(paths)):
            queue.put(rows)
    queue.put(None)
    proc.join()
