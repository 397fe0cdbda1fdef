"""The speech analysis graph and the merge that turns its branches into one result per file.

::

    Decode ──> Segment ──┬──> Transcribe ──┐
                         ├──> Speaker    ──┼──> merge_result ──> one dict per file
                         └──> GenderAge  ──┘

Transcribe, Speaker and GenderAge get the same `AudioClip` and run at the same time, each
in its own workers: this is the parallelism the three-models-per-recording use case needs
(asyncio, threads and one-process pools each fail it for a different reason).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .decode import DEFAULT_MAX_SECONDS

__all__ = ["DEFAULT_COSTS", "analysis_graph", "merge_result", "planned"]


DEFAULT_COSTS = {"decode": 0.001, "vad": 0.017, "transcribe": 1.61, "speaker": 0.106, "gender_age": 0.189}
"""Single-thread CPU seconds per 8 s file, measured here (docs/speech.md); used to plan
without a warm-up run. ``Engine(graph, cpus="auto", warmup=[...])`` measures instead."""


def analysis_graph(
    model: str | os.PathLike[str] | None = None,
    voices: str | os.PathLike[str] | None = None,
    age_model: str | os.PathLike[str] | None = None,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    *,
    language: str | None = None,
    beam_size: int = 5,
    compute_type: str = "int8",
    plan: str | None = "throughput",
    cores: int | None = None,
) -> Any:
    """The full per-file analysis as a `parapipe.Pipeline` (see the module diagram).

    Args:
        model: Whisper model for `Transcribe` (None: bundled tiny.en).
        voices: voice registry path for `Speaker` (None: per-worker, in memory).
        age_model: ONNX age/gender model for `GenderAge` (None: ``age`` is None).
        max_seconds: longest input `Decode` accepts.
        language, beam_size, compute_type: passed to `Transcribe`.
        plan: size replicas and threads for this machine from `DEFAULT_COSTS`:
            ``"throughput"`` (many files: whisper is ~85 % of the work, so it gets replicas),
            ``"latency"`` (one file at a time: whisper gets every core), or None to keep one
            single-thread worker per stage (e.g. to let ``cpus="auto"`` measure).
        cores: cores to plan for (default: those this process may use).
    """
    import parapipe as pp

    from .decode import Decode
    from .gender_age import GenderAge
    from .speaker import Speaker
    from .transcribe import Transcribe
    from .vad import Segment

    graph = pp.Pipeline(
        Decode(max_seconds=max_seconds),
        Segment(),
        pp.Parallel(
            transcribe=Transcribe(model, language=language, beam_size=beam_size, compute_type=compute_type),
            speaker=Speaker(voices),
            gender_age=GenderAge(age_model),
            merge=merge_result,
        ),
    )
    return graph if plan is None else planned(graph, plan, cores)


def planned(graph: Any, plan: str, cores: int | None = None) -> Any:
    """The graph with replicas and threads chosen for ``cores`` from `DEFAULT_COSTS`."""
    from parapipe.graph import latency_tree, map_stages
    from parapipe.resources import plan_latency, plan_throughput, usable_cores

    ncores = cores or len(usable_cores())
    if plan == "throughput":
        shape = plan_throughput(DEFAULT_COSTS, ncores)
    elif plan == "latency":
        shape = plan_latency(latency_tree(graph), DEFAULT_COSTS, ncores)
    else:
        raise ValueError(f"plan must be 'throughput', 'latency' or None, got {plan!r}")
    return map_stages(graph, lambda s: s.options(replicas=shape[s.stage_name][0], cpus=shape[s.stage_name][1]))


def merge_result(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One JSON-ready dict per file from the branch results ``{branch_name: result}``.

    Branches are recognised by what they return, not by their names, so any subset of
    Transcribe / Speaker / GenderAge merges; missing parts are None.
    """
    if not results:
        raise ValueError("merge_result needs at least one branch result")
    transcript = _branch(results, "text")
    speakers = _branch(results, "speakers")
    voice = _branch(results, "gender")
    any_branch = next(iter(results.values()))
    timings: dict[str, float] = {}
    for result in results.values():
        timings.update(result.get("timings", {}))
    return {
        "file": any_branch["file"],
        "duration": round(any_branch["duration"], 3),
        "text": transcript.get("text"),
        "language": transcript.get("language"),
        "speaker": speakers.get("speaker"),
        "speakers": list(speakers.get("speakers", [])),
        "gender": voice.get("gender"),
        "gender_confidence": voice.get("gender_confidence"),
        "age": voice.get("age"),
        "segments": _with_gender(_segments(transcript.get("segments"), speakers.get("segments")),
                                 voice.get("segments")),
        "timings": timings,
        "error": None,
    }


def _branch(results: Mapping[str, Mapping[str, Any]], key: str) -> Mapping[str, Any]:
    return next((r for r in results.values() if key in r), {})


def _segments(
    spoken: list[dict[str, Any]] | None, turns: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """Timed text with speaker labels.

    With word times, the words are split at the speaker turns, so a Whisper segment that
    spans a change of speaker is divided correctly. Without them, each Whisper segment takes
    the speaker it overlaps most.
    """
    if not turns:
        return [_segment(s["start"], s["end"], s["text"], None) for s in spoken or []]
    if spoken is None:
        return [_segment(t["start"], t["end"], None, t["speaker"]) for t in turns]
    words = [w for s in spoken for w in s.get("words", [])]
    if words or not spoken:
        return _split_words(words, turns)
    return [_segment(s["start"], s["end"], s["text"], _overlapping(s, turns)) for s in spoken]


def _split_words(words: list[list[Any]], turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each word to the turn nearest its midpoint; turns that got no words are dropped."""
    texts: list[list[str]] = [[] for _ in turns]
    for start, end, word in words:
        middle = (start + end) / 2
        nearest = min(range(len(turns)), key=lambda i: _distance(middle, turns[i]))
        texts[nearest].append(word)
    return [_segment(t["start"], t["end"], " ".join(ws), t["speaker"])
            for t, ws in zip(turns, texts, strict=True) if ws]


def _distance(time: float, turn: Mapping[str, Any]) -> float:
    """0 inside the turn, else the distance to its nearer edge."""
    return max(turn["start"] - time, time - turn["end"], 0.0)


def _overlapping(
    segment: Mapping[str, Any], others: list[dict[str, Any]], key: str = "speaker"
) -> Any:
    """``key`` of the segment in ``others`` that overlaps ``segment`` most (None if none)."""

    def overlap(other: Mapping[str, Any]) -> float:
        return min(segment["end"], other["end"]) - max(segment["start"], other["start"])

    best = max(others, key=overlap, default=None)
    return best[key] if best is not None and overlap(best) > 0 else None


def _with_gender(
    segments: list[dict[str, Any]], voiced: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """Each segment's gender from the GenderAge segment it overlaps most."""
    return [{**s, "gender": _overlapping(s, voiced or [], "gender")} for s in segments]


def _segment(start: float, end: float, text: str | None, speaker: str | None) -> dict[str, Any]:
    return {"start": round(start, 2), "end": round(end, 2), "text": text, "speaker": speaker}
