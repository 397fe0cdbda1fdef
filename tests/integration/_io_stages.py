"""Stages of the I/O tests: the same GET as a blocking call and as a coroutine (stdlib only)."""

from __future__ import annotations

import asyncio
import urllib.parse
import urllib.request

import parapipe as pp


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


async def afetch(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(f"GET {parts.path} HTTP/1.0\r\nHost: {parts.hostname}\r\n\r\n".encode())
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
    if not data:
        raise ConnectionResetError(f"{url}: the server closed the connection without answering")
    return data.split(b"\r\n\r\n", 1)[1].decode()


class AsyncFetch(pp.Stage):
    """A class stage with an async setup: the loop it runs on serves its items too."""

    def __init__(self) -> None:
        self.loop = None

    async def setup(self) -> None:
        self.loop = asyncio.get_running_loop()

    async def process(self, url: str) -> tuple[str, bool]:
        return await afetch(url), asyncio.get_running_loop() is self.loop
