"""The speech graph behind the service: uploads, refusals of paths and broken files, live streams.

Needs the audio extra and the espeak-ng corpus (built by the audio tests' fixture); skipped
otherwise. One server is shared by the module: loading Whisper takes seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from parapipe.service.client import AsyncClient, Client
from tests.audio import conftest as audio_fixtures
from tests.audio.conftest import Corpus, require_audio_extra

from .conftest import Server, start_server

pytestmark = pytest.mark.audio

TURNS = "multi/two_speakers.wav"
corpus = audio_fixtures.corpus  # the audio tests' session corpus (espeak-ng), made visible here


@pytest.fixture(scope="module")
def speech_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require_audio_extra()
    server = start_server("speech", tmp_path_factory.mktemp("speech"))
    yield server
    server.stop()


def _words(text: str | None) -> set[str]:
    return {w.strip(".,!?").lower() for w in (text or "").split()}


def test_an_uploaded_dialogue_is_transcribed_with_its_speakers(speech_server: Server, corpus: Corpus) -> None:
    label = corpus.labels["files"][TURNS]
    with Client(speech_server.url) as client:
        result = client.run(file=corpus.path(TURNS))
    assert result["file"] == "two_speakers.wav"
    assert len(_words(label["text"]) - _words(result["text"])) <= 2
    assert len(result["speakers"]) == 2
    assert [s["speaker"] for s in result["segments"]] == [
        result["speakers"][0],
        result["speakers"][1],
        result["speakers"][0],
    ]


def test_compressed_uploads_and_raw_bodies_are_decoded(speech_server: Server, corpus: Corpus) -> None:
    label = corpus.labels["files"]["formats/alan_1.m4a"]
    data = corpus.path("formats/alan_1.m4a").read_bytes()
    response = httpx.post(
        speech_server.url + "/v1/run", content=data, headers={"Content-Type": "application/octet-stream"}, timeout=120
    )
    assert response.status_code == 200, response.text
    assert len(_words(label["text"]) - _words(response.json()["result"]["text"])) <= 2
    assert response.json()["result"]["gender"] == "male"


def test_broken_files_are_422_with_the_decoder_error(speech_server: Server, corpus: Corpus) -> None:
    broken = corpus.files("broken")
    with httpx.Client(base_url=speech_server.url, timeout=120) as http:
        for path, label in broken:
            response = http.post("/v1/run", files={"file": (path.name, path.read_bytes())})
            assert response.status_code == 422, (path.name, response.text)
            error = response.json()["error"]
            assert (error["type"], error["stage"]) == ("StageError", "decode")
            assert error["exc_type"].endswith(label["error"]), path.name
            assert path.name in error["message"]


@pytest.mark.parametrize("item", ["/etc/passwd", {"data": "x", "file": "/etc/passwd"}, {"pcm16": ""}])
def test_json_items_are_refused_so_no_client_path_is_ever_opened(speech_server: Server, item: object) -> None:
    for route in ("/v1/run", "/v1/jobs"):
        response = httpx.post(speech_server.url + route, json={"item": item})
        assert response.status_code == 415
        assert "never opens a file path" in response.json()["error"]["message"]


def test_an_uploaded_name_is_only_a_label(speech_server: Server, corpus: Corpus) -> None:
    data = corpus.path("test/alan_1.wav").read_bytes()
    with Client(speech_server.url) as client:
        result = client.run(file=data, filename="../../etc/passwd")
    assert result["file"] == "passwd"


def _chunks(path: Path, seconds: float = 0.1) -> Iterator[bytes]:
    import soundfile as sf

    samples, rate = sf.read(path, dtype="int16")
    assert rate == 16_000 and samples.ndim == 1
    step = int(seconds * rate)
    for start in range(0, len(samples), step):
        yield samples[start : start + step].tobytes()


def test_a_live_stream_gets_each_utterance_then_the_whole(speech_server: Server, corpus: Corpus) -> None:
    label = corpus.labels["files"][TURNS]
    with Client(speech_server.url) as client:
        messages = list(client.stream_bytes(_chunks(corpus.path(TURNS))))
    *segments, final = messages
    assert final["type"] == "final" and final["errors"] == 0
    assert [m["type"] for m in segments] == ["segment"] * len(segments) and len(segments) >= 3
    for turn in label["turns"]:  # each turn starts an utterance, in stream time
        assert any(abs(m["start"] - turn["start"]) < 0.5 for m in segments), turn
    assert len(_words(label["text"]) - _words(final["text"])) <= 2
    assert len(final["speakers"]) == 2
    assert final["duration"] == pytest.approx(label["turns"][-1]["end"], abs=0.05)
    assert {m["gender"] for m in segments} == {"male", "female"}


def test_the_async_client_streams_audio_too(speech_server: Server, corpus: Corpus) -> None:
    async def scenario() -> list[dict]:
        async with AsyncClient(speech_server.url) as client:
            return [m async for m in client.stream_bytes(_chunks(corpus.path("test/alan_1.wav")))]

    *segments, final = asyncio.run(scenario())
    assert segments and final["type"] == "final"
    assert len(_words(corpus.labels["files"]["test/alan_1.wav"]["text"]) - _words(final["text"])) <= 2
