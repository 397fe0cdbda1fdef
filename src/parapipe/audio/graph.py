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
    compute_type: str | None = None,
    plan: str | None = "throughput",
    cores: int | None = None,
    num_speakers: int | None = None,
    min_speakers: int = 1,
    max_speakers: int | None = None,
) -> Any:
    """The full per-file analysis as a `parapipe.Pipeline` (see the module diagram).

    Args:
        model: Whisper model for `Transcribe` (None: bundled tiny.en).
        voices: voice registry path for `Speaker` (None: per-worker, in memory).
        age_model: ONNX age/gender model for `GenderAge` (None: ``age`` is None).
        max_seconds: longest input `Decode` accepts.
        language, beam_size, compute_type: passed to `Transcribe` (compute_type None: int8 on a CPU,
            float16 on a GPU).
        plan: size replicas and threads for this machine from `DEFAULT_COSTS`:
            ``"throughput"`` (many files: whisper is ~85 % of the work, so it gets replicas),
            ``"latency"`` (one file at a time: whisper gets every core), or None to keep one
            single-thread worker per stage (e.g. to let ``cpus="auto"`` measure).
        cores: cores to plan for (default: those this process may use).
        num_speakers, min_speakers, max_speakers: passed to `Speaker`; give them whenever
            you know them (a fixed count, or bounds on the count found per file).
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
            speaker=Speaker(voices, num_speakers=num_speakers, min_speakers=min_speakers,
                            max_speakers=max_speakers),
            gender_age=GenderAge(age_model),
            merge=merge_result,
        ),
    )
    return graph if plan is None else planned(graph, plan, cores)


def planned(graph: Any, plan: str, cores: int | None = None) -> Any:
    """The graph with replicas and threads chosen for ``cores`` from `DEFAULT_COSTS`; for
    throughput, speaker and gender yield the cores to whisper (`parapipe.priority`)."""
    from parapipe.graph import latency_tree, map_stages
    from parapipe.priority import SLACK_NICE, slack_stages
    from parapipe.resources import plan_latency, plan_throughput, usable_cores

    ncores = cores or len(usable_cores())
    slack: set[str] = set()
    if plan == "throughput":
        shape = plan_throughput(DEFAULT_COSTS, ncores)
        slack = slack_stages(latency_tree(graph), DEFAULT_COSTS)
    elif plan == "latency":
        shape = plan_latency(latency_tree(graph), DEFAULT_COSTS, ncores)
    else:
        raise ValueError(f"plan must be 'throughput', 'latency' or None, got {plan!r}")

    def shaped(s: Any) -> Any:
        replicas, threads = shape[s.stage_name]
        nice = SLACK_NICE if s.stage_name in slack and s.nice is None else s.nice
        return s.options(replicas=replicas, cpus=threads, nice=nice)

    return map_stages(graph, shaped)


def merge_result(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One JSON-ready dict per file from the branch results ``{branch_name: result}``.

    Branches are recognised by what they return, not by their names, so any subset of
    Transcribe / Speaker / GenderAge merges; missing parts are None. ``turns`` are the
    speaker turns, each with the words Whisper timed inside it and the gender of its own
    voiced frames; ``segments`` are Whisper's segments with the speaker that overlaps most.
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
    track = voice.get("voice_track")
    turns = _turns(transcript.get("segments"), speakers.get("turns"), track)
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
        "turns": turns,
        "segments": _segments(transcript.get("segments"), speakers.get("turns"), track),
        "timings": timings,
        "error": None,
    }


def _branch(results: Mapping[str, Mapping[str, Any]], key: str) -> Mapping[str, Any]:
    return next((r for r in results.values() if key in r), {})


def _turns(
    spoken: list[dict[str, Any]] | None, turns: list[dict[str, Any]] | None, track: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Speaker turns with their own text and gender.

    Each Whisper word goes to the turn its midpoint falls in (or the nearest one), so a
    Whisper segment spanning a change of speaker is divided at the change. Without word
    times (``Transcribe(word_timestamps=False)``) a whole segment goes to the turn it
    overlaps most. Without a transcript, ``text`` is None.
    """
    if not turns:
        return []
    texts: list[list[str]] | None = None
    if spoken is not None:
        texts = [[] for _ in turns]
        for segment in spoken:
            words = segment.get("words")
            pieces = words if words else [[segment["start"], segment["end"], segment["text"]]]
            for start, end, word in pieces:
                texts[_nearest((start + end) / 2, turns)].append(word)
    return [{"start": round(t["start"], 2), "end": round(t["end"], 2),
             "speaker": t["speaker"], "text": None if texts is None else " ".join(texts[i]),
             **_gender(track, t["start"], t["end"])}
            for i, t in enumerate(turns)]


def _segments(
    spoken: list[dict[str, Any]] | None, turns: list[dict[str, Any]] | None, track: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Whisper's timed segments, each with the speaker it overlaps most and its gender."""
    return [{"start": round(s["start"], 2), "end": round(s["end"], 2), "text": s["text"],
             "speaker": _overlapping(s, turns or []),
             "gender": _gender(track, s["start"], s["end"])["gender"]}
            for s in spoken or []]


def _nearest(time: float, turns: list[dict[str, Any]]) -> int:
    """Index of the turn holding ``time``, else of the turn nearest to it."""
    return min(range(len(turns)), key=lambda i: max(turns[i]["start"] - time, time - turns[i]["end"], 0.0))


def _overlapping(segment: Mapping[str, Any], turns: list[dict[str, Any]]) -> Any:
    """Speaker of the turn that overlaps ``segment`` most (None if none does)."""

    def overlap(turn: Mapping[str, Any]) -> float:
        return min(segment["end"], turn["end"]) - max(segment["start"], turn["start"])

    best = max(turns, key=overlap, default=None)
    return best["speaker"] if best is not None and overlap(best) > 0 else None


def _gender(track: dict[str, Any] | None, start: float, end: float) -> dict[str, Any]:
    """``gender`` and ``gender_confidence`` of the voiced frames between two times."""
    if track is None:
        return {"gender": None, "gender_confidence": None}
    from .gender_age import gender_between

    decided = gender_between(track, start, end)
    return {"gender": decided["gender"], "gender_confidence": decided["gender_confidence"]}
