"""The service's pure parts, without a server: settings, keys, errors, JSON, stream cutting."""

from __future__ import annotations

import argparse
import dataclasses
import enum
import inspect
import math

import numpy as np
import pytest

import parapipe as pp
from parapipe.audio.serving import SAMPLE_RATE, StreamSegmenter, final_message, segment_message
from parapipe.service import InsecureBind, Overloaded, ResultNotSerializable, ServiceConfig, Unauthorized
from parapipe.service.adapters import ItemAdapter, adapter_for
from parapipe.service.cli import configure_parser
from parapipe.service.config import DEFAULT_JOURNAL, api_keys_from_env, check_bind, is_loopback
from parapipe.service.errors import error_body, error_from, error_status
from parapipe.service.payloads import to_jsonable
from parapipe.service.security import check_key, key_matches


def test_api_keys_come_from_arguments_and_the_environment() -> None:
    env = {"PARAPIPE_API_KEYS": " b , c,,a "}
    assert api_keys_from_env(["a"], env) == ("a", "b", "c")
    assert api_keys_from_env([], {}) == ()


@pytest.mark.parametrize("keys", [("",), (" padded",), ("a,b",)])
def test_malformed_keys_are_refused(keys: tuple[str, ...]) -> None:
    with pytest.raises(pp.ConfigError):
        ServiceConfig(api_keys=keys)


def _cli_config(*argv: str) -> ServiceConfig:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return ServiceConfig.from_args(parser.parse_args(["mod:graph", *argv]))


def test_the_command_line_and_python_build_the_same_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARAPIPE_API_KEYS", "env-key-0123456789")
    assert _cli_config() == ServiceConfig(engine_options={"start_method": "spawn"})
    assert ServiceConfig().journal_path == DEFAULT_JOURNAL  # durable by default, as `parapipe serve`
    flags = _cli_config(
        "--api-key", "k1-0123456789abcdef", "--journal", ":memory:", "--max-queue", "7", "--max-body-bytes", "9",
        "--request-timeout", "3", "--drain-timeout", "2", "--cors-origin", "https://a.example",
        "--allowed-host", "h.example", "--insecure", "--start-method", "forkserver",
    )  # fmt: skip
    assert flags == ServiceConfig(
        api_keys=["k1-0123456789abcdef"],
        journal_path=":memory:",
        max_queue=7,
        max_body_bytes=9,
        request_timeout=3,
        drain_timeout=2,
        cors_origins=["https://a.example"],
        allowed_hosts=["h.example"],
        insecure=True,
        engine_options={"start_method": "forkserver"},
    )
    assert flags.api_keys == ("k1-0123456789abcdef", "env-key-0123456789") and flags.cors_origins == (
        "https://a.example",
    )
    assert "k1-0123456789abcdef" not in repr(flags) and "env-key-0123456789" not in repr(flags)


def test_create_app_and_serve_take_the_config_whole() -> None:
    """One option list: the entry points take a `ServiceConfig`, not a copy of its fields."""
    from parapipe.service import create_app, serve

    assert list(inspect.signature(create_app).parameters) == ["graph", "config"]
    assert list(inspect.signature(serve).parameters) == ["graph", "config", "host", "port", "fd", "log_level"]


def test_served_hosts_open_up_only_behind_keys_or_a_trusted_network() -> None:
    assert ServiceConfig(journal_path=":memory:").served_hosts() is None
    assert ServiceConfig(api_keys=["k" * 16]).served_hosts() == ("*",)
    assert ServiceConfig(insecure=True).served_hosts() == ("*",)
    assert ServiceConfig(api_keys=["k" * 16], allowed_hosts=["h"]).served_hosts() == ("h",)
    with pytest.raises(pp.ConfigError, match="api_keys=\\[key\\]"):
        ServiceConfig(api_keys="secret")  # type: ignore[arg-type]


class _Adapter:
    name = "custom"

    async def read_item(self, request: object) -> object:
        return None

    async def ws_session(self, host: object, websocket: object) -> None:
        return None


class _Hooked(pp.Stage):
    name = "hooked"

    def __init__(self, adapter: object) -> None:
        self.adapter = adapter

    def process(self, item: object) -> object:
        return item

    def service_adapter(self) -> object:
        return self.adapter


def test_the_graphs_first_stage_chooses_the_adapter() -> None:
    plain = pp.stage(lambda x: x, name="plain")
    custom = _Adapter()
    assert isinstance(adapter_for(plain), ItemAdapter)
    assert adapter_for(pp.Pipeline(pp.Pipeline(_Hooked(custom)), plain)) is custom
    assert isinstance(adapter_for(pp.Pipeline(plain, _Hooked(custom))), ItemAdapter)  # only the first stage
    assert isinstance(adapter_for(pp.Parallel(a=_Hooked(custom), b=plain, merge=dict)), ItemAdapter)
    with pytest.raises(pp.ConfigError, match="lacks name, read_item, ws_session"):
        adapter_for(_Hooked(object()))


def test_the_speech_graph_brings_its_own_adapter() -> None:
    from parapipe.audio import analysis_graph

    assert adapter_for(analysis_graph()).name == "speech"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("example.com", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_binding_beyond_loopback_needs_a_key_or_insecure() -> None:
    check_bind("127.0.0.1", (), insecure=False)
    check_bind("0.0.0.0", ("key",), insecure=False)
    check_bind("0.0.0.0", (), insecure=True)
    with pytest.raises(InsecureBind, match="--insecure"):
        check_bind("0.0.0.0", (), insecure=False)


def test_keys_are_checked_in_full() -> None:
    assert key_matches("secret", ["other", "secret"])
    assert not key_matches("secre", ["secret"])
    assert not key_matches("", ["secret"])
    check_key({}, [])  # no keys configured: open
    check_key({"authorization": "bearer secret"}, ["secret"])
    with pytest.raises(Unauthorized):
        check_key({"authorization": "Bearer secret2"}, ["secret"])


def test_errors_map_to_statuses_and_back() -> None:
    stage_error = pp.StageError("decode", "not audio", exc_type="NotAudio", traceback="secret frames", index=4)
    cases = [
        (stage_error, 422),
        (pp.TaskTimeout("asr", timeout=2.0), 504),
        (pp.WorkerDied("asr", exitcode=-9), 500),
        (pp.StageFailed("asr", "setup keeps crashing"), 503),
        (Overloaded("full", retry_after=3), 429),
        (ValueError("odd"), 500),
    ]
    for exc, status in cases:
        assert error_status(exc) == status
    body = error_body(stage_error)
    assert "traceback" not in body and "index" not in body
    rebuilt = error_from(422, body)
    assert isinstance(rebuilt, pp.StageError) and (rebuilt.stage, rebuilt.exc_type) == ("decode", "NotAudio")
    failed = error_from(503, error_body(pp.StageFailed("asr", "down")))
    assert isinstance(failed, pp.StageFailed) and str(failed) == "stage 'asr' failed: down"
    overloaded = error_from(429, error_body(Overloaded("full")), retry_after=2.0)
    assert isinstance(overloaded, Overloaded) and overloaded.retry_after == 2.0


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: float
    y: np.ndarray


def test_results_become_plain_json() -> None:
    value = {1: (np.float32(0.5), np.arange(3)), "p": Point(math.nan, np.zeros(2)), "c": Colour.RED, "b": b"\x00"}
    assert to_jsonable(value) == {
        "1": [0.5, [0, 1, 2]],
        "p": {"x": None, "y": [0.0, 0.0]},
        "c": "red",
        "b": {"base64": "AA=="},
    }
    with pytest.raises(ResultNotSerializable, match="object"):
        to_jsonable({"x": object()})


def _energy_vad(audio: np.ndarray) -> tuple[tuple[float, float], ...]:
    """A stand-in for Silero: 10 ms frames louder than 0.1 are speech, gaps under 0.3 s merge."""
    frame = SAMPLE_RATE // 100
    loud = [bool(np.abs(audio[i : i + frame]).max() > 0.1) for i in range(0, len(audio) - frame + 1, frame)]
    regions: list[list[float]] = []
    for i, on in enumerate(loud):
        if not on:
            continue
        if regions and i / 100 - regions[-1][1] < 0.3:
            regions[-1][1] = (i + 1) / 100
        else:
            regions.append([i / 100, (i + 1) / 100])
    return tuple((round(a, 2), round(b, 2)) for a, b in regions)


def _pcm(*parts: tuple[str, float]) -> bytes:
    out = [np.full(int(seconds * SAMPLE_RATE), 0.5 if kind == "speech" else 0.0) for kind, seconds in parts]
    return (np.concatenate(out) * 32767).astype("<i2").tobytes()


def _feed(segmenter: StreamSegmenter, pcm: bytes, chunk: int) -> list:
    found = []
    for start in range(0, len(pcm), chunk):
        found += segmenter.feed(pcm[start : start + chunk])
    return found


def test_utterances_end_at_pauses_while_audio_keeps_coming() -> None:
    pcm = _pcm(("silence", 1.0), ("speech", 1.0), ("silence", 0.8), ("speech", 1.5), ("silence", 0.2))
    segmenter = StreamSegmenter(_energy_vad)
    live = _feed(segmenter, pcm, 3201)  # odd chunk sizes split samples across messages
    assert [(u.index, u.start, u.end) for u in live] == [(0, pytest.approx(1.0, abs=0.02), 2.0)]
    assert len(live[0].pcm) == 2 * round((live[0].end - live[0].start) * SAMPLE_RATE)
    rest = segmenter.flush()
    assert [(u.index, u.start, u.end) for u in rest] == [(1, pytest.approx(2.8, abs=0.02), pytest.approx(4.3))]
    assert segmenter.seconds == pytest.approx(4.5)


def test_long_speech_is_cut_and_long_silence_is_dropped() -> None:
    segmenter = StreamSegmenter(_energy_vad)
    assert _feed(segmenter, _pcm(("silence", 20.0)), 16_000) == []
    assert len(segmenter._pending) <= 2 * SAMPLE_RATE  # only the last half second or so is kept
    cut = _feed(segmenter, _pcm(("speech", 31.0)), 16_000)
    assert len(cut) == 1 and cut[0].start == pytest.approx(20.0, abs=0.6) and cut[0].end - cut[0].start >= 29.5


def test_segment_and_final_messages_use_stream_time() -> None:
    segmenter = StreamSegmenter(_energy_vad)
    first, second = [
        *_feed(segmenter, _pcm(("speech", 1.0), ("silence", 1.0), ("speech", 1.0)), 8000),
        *segmenter.flush(),
    ]
    result = {
        "text": "hello",
        "speaker": "ann",
        "speakers": ["ann"],
        "gender": "female",
        "segments": [{"start": 0.1, "end": 0.9, "text": "hello", "speaker": "ann"}],
    }
    ok = segment_message(second, {"result": result})
    assert ok["segments"] == [
        {"start": second.start + 0.1, "end": second.start + 0.9, "text": "hello", "speaker": "ann"}
    ]
    bad = segment_message(first, {"error": {"type": "StageError", "message": "x", "stage": "asr"}})
    final = final_message([bad, ok], 3.0)
    assert (final["text"], final["speakers"], final["utterances"], final["errors"]) == ("hello", ["ann"], 2, 1)
