"""Write N chat-log files to clean, one in five as Excel: ``python make_files.py data 1000``.

Each file holds agent/customer messages plus the junk the seed's cleaner removed: WeChat system
notices, empty messages and duplicated rows.
"""

from __future__ import annotations

import csv
import random
import sys
from pathlib import Path

COLUMNS = ["agent_id", "customer_id", "is_agent", "message"]
SYSTEM = ["我通过了好友请求,现在你俩可以开始聊天了", "不支持此消息,请在手机上查看", "微信红包"]
WORDS = ["hello", "thanks", "order", "refund", "delivery", "price", "tomorrow", "please", "address", "invoice"]


def rows(rng: random.Random, n: int) -> list[list[str]]:
    out = []
    for _ in range(n):
        kind = rng.random()
        message = rng.choice(SYSTEM) if kind < 0.1 else "" if kind < 0.15 else " ".join(rng.choices(WORDS, k=6))
        out.append([f"a{rng.randrange(5)}", f"c{rng.randrange(50)}", rng.choice(["yes", "no"]), message])
    return out + out[: n // 20]  # duplicates, as exports from the chat tool repeat rows


def main(folder: str, count: int, rows_per_file: int = 200) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for i in range(count):
        data = rows(rng, rows_per_file)
        if i % 5 == 4:
            from openpyxl import Workbook

            book = Workbook()
            for row in [COLUMNS, *data]:
                book.active.append(row)
            book.save(Path(folder) / f"chat-{i:04d}.xlsx")
        else:
            with open(Path(folder) / f"chat-{i:04d}.csv", "w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows([COLUMNS, *data])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data", int(sys.argv[2]) if len(sys.argv) > 2 else 1000)
