"""VoiceRegistry: storage, matching rules, persistence and concurrency (no model needed)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from parapipe.audio import VoiceRegistry
from parapipe.audio.voices import DEFAULT_THRESHOLD

pytestmark = pytest.mark.audio

DIM = 256


def _voice(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _near(v: np.ndarray, seed: int, spread: float = 0.3) -> np.ndarray:
    """Another recording of the same voice: close to ``v`` (cosine about 0.95)."""
    noise = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    w = v + spread * noise / np.linalg.norm(noise)
    return w / np.linalg.norm(w)


@pytest.fixture
def registry(tmp_path: Path) -> VoiceRegistry:
    reg = VoiceRegistry(tmp_path / "voices.db")
    yield reg
    reg.close()


def test_enroll_list_rename_remove(registry: VoiceRegistry) -> None:
    registry.enroll_embeddings("ann", [_voice(1), _near(_voice(1), 2)])
    assert registry.enroll_embeddings("ann", [_near(_voice(1), 3)]).count == 3
    registry.identify(_voice(9), DEFAULT_THRESHOLD)
    assert [(v.label, v.enrolled, v.count) for v in registry.list()] == [
        ("ann", True, 3), ("unknown-1", False, 1)]
    registry.rename("unknown-1", "bob")
    assert registry.identify(_near(_voice(9), 4), DEFAULT_THRESHOLD).label == "bob"
    assert registry.remove("ann") and not registry.remove("ann")
    assert [v.label for v in registry.list()] == ["bob"]


@pytest.mark.parametrize("name", ["", "unknown-7"])
def test_unknown_prefix_and_empty_names_are_reserved(registry: VoiceRegistry, name: str) -> None:
    with pytest.raises(ValueError, match="unknown-"):
        registry.enroll_embeddings(name, [_voice(1)])


def test_enrolled_first_then_unknowns_then_a_new_unknown(registry: VoiceRegistry) -> None:
    registry.enroll_embeddings("ann", [_voice(1)])
    assert registry.identify(_near(_voice(1), 5), 0.8).label == "ann"
    first = registry.identify(_voice(2), 0.8)
    assert (first.label, first.enrolled, first.new) == ("unknown-1", False, True)
    again = registry.identify(_near(_voice(2), 6), 0.8)
    assert (again.label, again.new) == ("unknown-1", False) and again.score > 0.9
    assert registry.identify(_voice(3), 0.8).label == "unknown-2"


def test_learn_false_never_writes(registry: VoiceRegistry) -> None:
    assert registry.identify(_voice(2), 0.8, learn=False) is None
    assert registry.list() == []


def test_unknown_labels_survive_a_restart(tmp_path: Path) -> None:
    with VoiceRegistry(tmp_path / "v.db") as first:
        assert first.identify(_voice(2), 0.8).label == "unknown-1"
    with VoiceRegistry(tmp_path / "v.db") as second:
        assert second.identify(_near(_voice(2), 7), 0.8).label == "unknown-1"
        assert second.identify(_voice(3), 0.8).label == "unknown-2"


def _identify_in_child(path: str, seed: int) -> str:
    with VoiceRegistry(path) as registry:
        return registry.identify(_near(_voice(2), seed), 0.8).label


def test_replicas_meeting_one_new_voice_agree_on_its_label(tmp_path: Path) -> None:
    path = str(tmp_path / "v.db")
    VoiceRegistry(path).close()
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        labels = pool.starmap(_identify_in_child, [(path, seed) for seed in range(8)])
    assert set(labels) == {"unknown-1"}


def test_calibrate_puts_the_threshold_in_the_gap(registry: VoiceRegistry) -> None:
    for speaker in range(4):
        base = _voice(100 + speaker)
        registry.enroll_embeddings(f"s{speaker}", [_near(base, 10 * speaker + k) for k in range(3)])
    cal = registry.calibrate()
    assert cal.errors == 0
    assert cal.impostor_max < cal.threshold < cal.genuine_min
    assert cal.threshold < (cal.impostor_max + cal.genuine_min) / 2  # leans to impostors
    assert registry.threshold == pytest.approx(cal.threshold, abs=1e-4)


def test_calibrate_needs_two_voices(registry: VoiceRegistry) -> None:
    registry.enroll_embeddings("ann", [_voice(1), _near(_voice(1), 2)])
    with pytest.raises(ValueError, match="two enrolled voices"):
        registry.calibrate()
