"""Call the server three ways: ``python client.py http://127.0.0.1:8000``."""

from __future__ import annotations

import asyncio
import sys

import parapipe as pp


def sync_calls(url: str) -> None:
    with pp.Client(url) as client:
        print("run:", client.run({"text": "hello"}))  # blocks until the answer is back
        job = client.submit({"text": "a job to fetch later"})  # returns a job id at once
        print("job", job, "->", client.result(job))


async def async_jobs(url: str, count: int = 300) -> None:
    async with pp.AsyncClient(url) as client:
        jobs = await asyncio.gather(*(client.submit({"text": f"request {i}"}) for i in range(count)))
        results = await asyncio.gather(*(client.result(job) for job in jobs))
    sizes = sorted({r["batch"] for r in results})
    print(f"{len(results)} async jobs answered; batch sizes the model saw: {sizes}")


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
    sync_calls(target)
    asyncio.run(async_jobs(target))
