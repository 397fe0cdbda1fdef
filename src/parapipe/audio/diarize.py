"""Who spoke when: cluster voiceprints of short windows into speakers, then cut turns.

Why windows and not VAD segments: people in a call or a meeting answer each other without
pausing, so one VAD segment often holds several turns. The speaker stage embeds windows of
`WINDOW_SECONDS` every `HOP_SECONDS` over the speech (resemblyzer's d-vectors), and

1. clusters all windows of the file at once (spectral clustering, see `cluster`): with no
   speaker count given, the count is the refined affinity's largest eigengap, then clusters
   still `MERGE_THRESHOLD` alike are joined; ``num_speakers`` fixes the count,
   ``min_speakers`` / ``max_speakers`` bound it;
2. folds clusters holding less than `MIN_CLUSTER_SECONDS` of windows into the nearest
   larger one: a cough or a window straddling two voices is not a new person;
3. labels every `GRID_SECONDS` step of speech with the cluster whose centroid its covering
   windows resemble most on average, which puts a change of speaker between windows rather
   than at a window's edge, then absorbs runs shorter than `MIN_TURN_SECONDS` (smoothing);
4. joins neighbouring steps of one speaker into turns, across pauses under `JOIN_GAP_SECONDS`.

Turns never overlap: overlapped speech goes to whichever voice dominates it. Naming the
clusters (enrolled voices, stable ``unknown-N``) is the voice registry's job, in `Speaker`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

__all__ = ["HOP_SECONDS", "MERGE_THRESHOLD", "WINDOW_SECONDS", "Diarization", "cluster", "diarize"]

WINDOW_SECONDS = 1.0
"""Shorter windows see short turns (1 s answers) whole; on the generated conversations 1.0 s
gave a lower DER than 1.2 or 1.5 s, at half the encoder time of a 0.25 s hop."""
HOP_SECONDS = 0.5
MERGE_THRESHOLD = 0.88
"""Clusters whose centroids are this alike are one voice. On our corpora the eigengap splits
a LibriVox reader into parts 0.89-0.91 alike, while two distinct synthetic voices reach 0.86
and two real men 0.68-0.76 (benchmarks/quality.py)."""
NEIGHBOUR_PERCENTILE = 0.8
"""Each window keeps full affinity only to the closest 20 % of windows."""
MAX_SPEAKERS = 8
MIN_CLUSTER_SECONDS = 2.0
MIN_TURN_SECONDS = 0.6
GRID_SECONDS = 0.1
JOIN_GAP_SECONDS = 0.5


@dataclass(frozen=True)
class Diarization:
    """Turns ``(start, end, cluster)`` in time order, and each cluster's unit centroid."""

    turns: list[tuple[float, float, int]]
    centroids: np.ndarray


def diarize(
    spans: list[tuple[float, float]],
    vectors: np.ndarray,
    regions: tuple[tuple[float, float], ...],
    *,
    num_speakers: int | None = None,
    min_speakers: int = 1,
    max_speakers: int | None = None,
    threshold: float = MERGE_THRESHOLD,
) -> Diarization:
    """Turns from window voiceprints (see the module docstring).

    Args:
        spans: each window's ``(start, end)`` in seconds, as `VoiceEmbedder.embed_windows` gives.
        vectors: their unit voiceprints, one row per window.
        regions: the speech regions; speech outside every window (a region too short to
            embed) goes to the nearest turn's speaker.
    """
    if len(spans) == 0:
        return Diarization([], np.zeros((0, vectors.shape[-1]), np.float32))
    labels = cluster(vectors, num_speakers=num_speakers, min_speakers=min_speakers,
                     max_speakers=max_speakers, threshold=threshold)
    labels = _fold_small(vectors, labels, _min_windows(), num_speakers or min_speakers)
    centroids = _centroids(vectors, labels)
    steps, owner = _label_grid(spans, vectors, centroids, regions)
    return Diarization(_turns(steps, owner, regions), centroids)


def cluster(
    vectors: np.ndarray,
    *,
    num_speakers: int | None = None,
    min_speakers: int = 1,
    max_speakers: int | None = None,
    threshold: float = MERGE_THRESHOLD,
) -> np.ndarray:
    """Cluster index per window, 0..k-1 in order of first appearance.

    Spectral clustering (Wang et al., "Speaker diarization with LSTM", 2018): the cosine
    affinity of the windows is refined so that each window keeps only its closest
    neighbours, and the number of speakers is the largest eigengap of that matrix. Without
    ``num_speakers``, clusters whose centroids are still at least ``threshold`` alike are then
    merged: the eigengap over-splits a real voice whose windows vary with the words spoken.
    """
    n = len(vectors)
    if n < 3:
        return np.arange(n) if num_speakers and num_speakers >= n else np.zeros(n, int)
    values, vectors_k = _spectrum(vectors)
    if num_speakers is not None:
        k = min(num_speakers, n)
    else:
        candidates = min(MAX_SPEAKERS, n - 1)  # the gap after the last one needs one more eigenvalue
        gaps = values[:candidates] / np.maximum(values[1 : candidates + 1], 1e-10)
        k = int(np.clip(int(np.argmax(gaps)) + 1, min_speakers, max_speakers or n))
    if k == 1:
        return np.zeros(n, int)
    from scipy.cluster.vq import kmeans2

    points = vectors_k[:, :k] / np.maximum(np.linalg.norm(vectors_k[:, :k], axis=1, keepdims=True), 1e-12)
    _, raw = kmeans2(points, k, minit="++", seed=0)
    labels = _renumber(raw)
    if num_speakers is None:
        labels = _merge_alike(vectors, labels, threshold, min_speakers)
    return labels


def _spectrum(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors of the refined affinity matrix."""
    affinity = vectors.astype(np.float64) @ vectors.T.astype(np.float64)
    np.fill_diagonal(affinity, -np.inf)
    np.fill_diagonal(affinity, affinity.max(axis=1))
    keep = max(1, round(len(affinity) * (1 - NEIGHBOUR_PERCENTILE)))
    row_threshold = np.sort(affinity, axis=1)[:, -keep][:, None]
    affinity = np.where(affinity >= row_threshold, affinity, affinity * 0.01)
    affinity = np.maximum(affinity, affinity.T)
    affinity = affinity @ affinity.T
    affinity /= np.maximum(affinity.max(axis=1, keepdims=True), 1e-12)
    values, eigen = np.linalg.eigh((affinity + affinity.T) / 2)
    return values[::-1], eigen[:, ::-1]


def _merge_alike(vectors: np.ndarray, labels: np.ndarray, threshold: float, keep_at_least: int) -> np.ndarray:
    """Join the two most alike clusters while their centroids reach ``threshold``."""
    while True:
        centroids = _centroids(vectors, labels)
        if len(centroids) <= max(1, keep_at_least):
            return labels
        alike = centroids @ centroids.T
        np.fill_diagonal(alike, -1.0)
        i, j = np.unravel_index(int(np.argmax(alike)), alike.shape)
        if alike[i, j] < threshold:
            return labels
        labels = _renumber(np.where(labels == j, i, labels))


def _min_windows() -> int:
    """Windows that cover `MIN_CLUSTER_SECONDS` of speech at the hop used."""
    return max(1, int(np.ceil((MIN_CLUSTER_SECONDS - WINDOW_SECONDS) / HOP_SECONDS)) + 1)


def _fold_small(vectors: np.ndarray, labels: np.ndarray, min_windows: int, keep_at_least: int) -> np.ndarray:
    """Move the windows of clusters smaller than ``min_windows`` to the nearest big cluster.

    Clusters are folded smallest first and never below ``keep_at_least`` clusters, so an
    explicit speaker count is honoured.
    """
    labels = labels.copy()
    while True:
        sizes = np.bincount(labels)
        present = np.flatnonzero(sizes)
        small = [k for k in present if sizes[k] < min_windows]
        if not small or len(present) <= max(1, keep_at_least):
            return _renumber(labels)
        smallest = min(small, key=lambda k: sizes[k])
        others = [k for k in present if k != smallest]
        centroids = _centroids(vectors, labels)
        members = labels == smallest
        scores = [float((vectors[members] @ centroids[k]).mean()) for k in others]
        labels[members] = others[int(np.argmax(scores))]


def _centroids(vectors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Unit mean voiceprint of each cluster (rows of clusters with no windows are zero)."""
    out = np.zeros((int(labels.max()) + 1, vectors.shape[1]), np.float32)
    for k in np.unique(labels):
        mean = vectors[labels == k].mean(axis=0)
        out[k] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return out


def _renumber(raw: np.ndarray) -> np.ndarray:
    """Cluster ids 0..k-1 by first appearance, so the first voice heard is cluster 0."""
    order = {int(k): i for i, k in enumerate(dict.fromkeys(int(x) for x in raw))}
    return np.array([order[int(x)] for x in raw], int)


def _label_grid(
    spans: list[tuple[float, float]],
    vectors: np.ndarray,
    centroids: np.ndarray,
    regions: tuple[tuple[float, float], ...],
) -> tuple[np.ndarray, np.ndarray]:
    """Grid step start times inside the speech, and the cluster each belongs to."""
    steps = np.concatenate([np.arange(s, e, GRID_SECONDS) for s, e in regions] or [np.zeros(0)])
    starts = np.array([s for s, _ in spans])
    ends = np.array([e for _, e in spans])
    similarity = vectors @ centroids.T  # windows x clusters
    middles = steps + GRID_SECONDS / 2
    covering = (starts[None, :] <= middles[:, None]) & (middles[:, None] < ends[None, :])
    counts = covering.sum(axis=1)
    scores = covering.astype(np.float32) @ similarity / np.maximum(counts, 1)[:, None]
    owner = np.argmax(scores, axis=1)
    uncovered = np.flatnonzero(counts == 0)
    if len(uncovered) and (counts > 0).any():
        covered = np.flatnonzero(counts > 0)
        nearest = covered[np.abs(middles[covered][None, :] - middles[uncovered][:, None]).argmin(axis=1)]
        owner[uncovered] = owner[nearest]
    return steps, _smooth(owner, steps)


def _smooth(owner: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Absorb runs shorter than `MIN_TURN_SECONDS` into a neighbour, shortest run first."""
    owner = owner.copy()
    min_steps = round(MIN_TURN_SECONDS / GRID_SECONDS)
    while True:
        runs = _runs(owner, steps)
        if len(runs) < 2:
            return owner
        i = min(range(len(runs)), key=lambda r: runs[r][1] - runs[r][0])
        first, last = runs[i]
        if last - first >= min_steps:
            return owner
        neighbours = [runs[j] for j in (i - 1, i + 1) if 0 <= j < len(runs)]
        longest = max(neighbours, key=lambda r: r[1] - r[0])
        owner[first:last] = owner[longest[0]]


def _runs(owner: np.ndarray, steps: np.ndarray) -> list[tuple[int, int]]:
    """``[first, last)`` index ranges of equal labels, broken also at pauses of a second or more."""
    breaks = np.flatnonzero((owner[1:] != owner[:-1]) | (np.diff(steps) > 1.0)) + 1
    edges = [0, *breaks.tolist(), len(owner)]
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


def _turns(
    steps: np.ndarray, owner: np.ndarray, regions: tuple[tuple[float, float], ...]
) -> list[tuple[float, float, int]]:
    """Contiguous steps of one cluster as turns, clipped to the speech regions."""
    turns: list[tuple[float, float, int]] = []
    for start, end in regions:
        inside = np.flatnonzero((steps >= start - 1e-9) & (steps < end))
        for first, last in _runs(owner[inside], steps[inside]):
            t0 = float(steps[inside[first]])
            t1 = min(float(steps[inside[last - 1]]) + GRID_SECONDS, end)
            speaker = int(owner[inside[first]])
            if turns and turns[-1][2] == speaker and t0 - turns[-1][1] < JOIN_GAP_SECONDS:
                turns[-1] = (turns[-1][0], round(t1, 3), speaker)
            else:
                turns.append((round(t0, 3), round(t1, 3), speaker))
    return turns
