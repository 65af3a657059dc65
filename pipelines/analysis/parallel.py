"""The same sentence in other languages: each feature's activation over the versions of parallel groups.

The corpus's parallel groups (manifest `Clip.group`, e.g. Asterisk's prompts) are one sentence said in
several languages. `parallel_traces` shows, for every feature, the groups where it fires hardest with its
activation over time on each language version, and scores how evenly it fires across the versions: a
feature of the sentence's content (a word, a phone sequence, a position) fires in every version; a
language feature fires in one.

One pass over the activation shards, a group at a time: the frames of a group's clips are read from the
memory-mapped shards, encoded in chunks of `chunk_frames`, and max-pooled straight into each clip's trace
(at most `max_points` points, `group_points` per group). A group is final once encoded, so each feature's
top groups are kept exactly with bounded buffers: memory is F x `top_groups` x (trace points of a group),
plus one group's (points, F) traces and one chunk's latents, never the frames.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from pipelines.activations import iter_shards
from pipelines.analysis.result import ParallelTable
from pipelines.analysis.scan import LatentEncoder, encode_chunk
from pipelines.corpus.manifest import Clip

MAX_POINTS = 150
"""Trace points per clip at most (a clip of more frames is max-pooled over runs of frames)."""
GROUP_POINTS = 1200
"""Trace points per group at most (groups of more than 8 clips get fewer points per clip)."""
MIN_POINTS = 24
"""Trace points per clip at least, however large its group."""
CHUNK_FRAMES = 2048
"""Frames encoded at once: one chunk's latents are (CHUNK_FRAMES, F) float32."""


def parallel_groups(clips: list[Clip], clip_frames: dict[int, int]) -> dict[str, list[int]]:
    """group key -> its clips' manifest rows (by language, then row): groups of at least 2 languages among
    the clips with frames in `clip_frames` (row -> frames), sorted by key."""
    members: dict[str, list[int]] = defaultdict(list)
    for row, clip in enumerate(clips):
        if clip.group and clip.language and clip_frames.get(row, 0) > 0:
            members[clip.group].append(row)
    return {
        key: sorted(rows, key=lambda r: (clips[r].language, r))
        for key, rows in sorted(members.items())
        if len({clips[r].language for r in rows}) >= 2
    }


def _clip_spans(activations: Path) -> tuple[list[np.ndarray], dict[int, tuple[int, int, int]]]:
    """The shards' memory-mapped activations and, per clip row, (shard, first row, end row)."""
    shards, spans = [], {}
    for s, (acts_ND, index_N2) in enumerate(iter_shards(activations)):
        shards.append(acts_ND)
        rows = np.asarray(index_N2[:, 0])
        if not len(rows):
            continue
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        ends = np.r_[starts[1:], len(rows)]
        for a, b in zip(starts.tolist(), ends.tolist()):
            spans[int(rows[a])] = (s, a, b)
    return shards, spans


def points_per_clip(n_clips: int, max_points: int = MAX_POINTS, group_points: int = GROUP_POINTS) -> int:
    """Trace points per clip of a group of `n_clips` clips."""
    return min(max_points, max(MIN_POINTS, group_points // max(n_clips, 1)))


def _trace(
    sae: LatentEncoder, acts_ND: np.ndarray, step: int, n_points: int, chunk_frames: int
) -> torch.Tensor:
    """(n_points, F) float32: the max of the latents over each run of `step` frames of one clip."""
    chunk = max(step, chunk_frames // step * step)  # chunks start on a point's first frame
    parts = []
    for a in range(0, len(acts_ND), chunk):
        latents_NF = encode_chunk(sae, np.asarray(acts_ND[a : a + chunk]))
        n, f = latents_NF.shape
        pad = -n % step
        if pad:
            latents_NF = torch.cat([latents_NF, latents_NF.new_full((pad, f), -torch.inf)])
        parts.append(latents_NF.view(-1, step, f).amax(1))
    trace_PF = torch.cat(parts)
    assert trace_PF.shape[0] == n_points
    return trace_PF.clamp_min_(0.0)


def _version_similarity(peak_LF: np.ndarray) -> np.ndarray:
    """(F,) per feature: (sum_L m_L / max_L m_L - 1) / (L - 1) of its per-language peaks m (NaN where it
    does not fire): the mean-over-versions / max-over-versions ratio rescaled from [1/L, 1] to [0, 1]."""
    n_lang = peak_LF.shape[0]
    top_F = peak_LF.max(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio_F = (peak_LF.sum(0) / top_F - 1.0) / (n_lang - 1)
    return np.where(top_F > 0, np.clip(ratio_F, 0.0, 1.0), np.nan)


def parallel_traces(
    activations: Path,
    sae: LatentEncoder,
    clips: list[Clip],
    top_groups: int = 3,
    *,
    max_points: int = MAX_POINTS,
    group_points: int = GROUP_POINTS,
    chunk_frames: int = CHUNK_FRAMES,
) -> ParallelTable:
    """Each feature's `top_groups` parallel groups and its traces on their clips, and its cross-lingual score.

    Parallel groups are manifest groups whose extracted clips span at least 2 languages (`parallel_groups`).
    A feature's strength on a group is its max activation over the group's clips; its top groups are the
    `top_groups` strongest where it fires (> 0), ties to the earlier group key. For each, every clip of the
    group gets the feature's trace: per-frame activations max-pooled to at most `max_points` points.

    Cross-lingual score, in [0, 1] (`ParallelTable.cross_lingual`): for a group where the feature fires,
    let m_L be its max activation over the group's clips of language L (L = 1..n, the group's languages);
    the group's similarity is (mean_L m_L / max_L m_L) rescaled from [1/n, 1] to [0, 1], i.e.
    (sum_L m_L / max_L m_L - 1) / (n - 1): 1 = it peaks equally high in every version, 0 = it fires in one
    version only. The score is the mean of that over every parallel group where the feature fires, NaN for
    a feature that fires in none.
    """
    shards, spans = _clip_spans(activations)
    clip_frames = {row: b - a for row, (_, a, b) in spans.items()}
    groups = parallel_groups(clips, clip_frames)
    n_features = int(sae.W_dec.shape[0])
    k_top = max(int(top_groups), 0)
    keys = list(groups)

    def layout(rows: list[int]) -> list[tuple[int, int]]:
        """(frames per point, points) of each clip of a group."""
        per_clip = points_per_clip(len(rows), max_points, group_points)
        out = []
        for row in rows:
            step = max(1, math.ceil(clip_frames[row] / per_clip))
            out.append((step, math.ceil(clip_frames[row] / step)))
        return out

    layouts = [layout(groups[key]) for key in keys]
    p_max = max((sum(p for _, p in lay) for lay in layouts), default=0)
    best_score_FK = np.zeros((n_features, k_top), np.float32)
    best_group_FK = np.full((n_features, k_top), -1, np.int32)
    best_trace_FKP = np.zeros((n_features, k_top, p_max), np.float16)
    score_sum_F = np.zeros(n_features, np.float64)
    score_n_F = np.zeros(n_features, np.int64)

    for g, key in enumerate(keys):
        rows, lay = groups[key], layouts[g]
        traces = []
        for row, (step, n_points) in zip(rows, lay):
            s, a, b = spans[row]
            traces.append(_trace(sae, shards[s][a:b], step, n_points, chunk_frames))
        peak_CF = torch.stack([t.amax(0) for t in traces]).numpy()
        languages = [clips[r].language for r in rows]
        names = sorted(set(languages))
        peak_LF = np.stack(
            [peak_CF[[i for i, lang in enumerate(languages) if lang == name]].max(0) for name in names]
        )
        similarity_F = _version_similarity(peak_LF)
        fires = ~np.isnan(similarity_F)
        score_sum_F[fires] += similarity_F[fires]
        score_n_F[fires] += 1
        if k_top == 0:
            continue
        group_max_F = peak_LF.max(0)
        enters = fires & (group_max_F > best_score_FK[:, -1])
        if not enters.any():
            continue
        trace_FP = torch.cat(traces).T[torch.from_numpy(enters)].numpy().astype(np.float16)
        ids = np.flatnonzero(enters)
        score = group_max_F[ids]
        pos = (best_score_FK[ids] >= score[:, None]).sum(1)  # after the equal ones: earlier groups win ties
        for k in range(k_top - 1, -1, -1):
            shift = ids[pos < k]
            if len(shift):
                best_score_FK[shift, k] = best_score_FK[shift, k - 1]
                best_group_FK[shift, k] = best_group_FK[shift, k - 1]
                best_trace_FKP[shift, k] = best_trace_FKP[shift, k - 1]
            here = pos == k
            best_score_FK[ids[here], k] = score[here]
            best_group_FK[ids[here], k] = g
            best_trace_FKP[ids[here], k, : trace_FP.shape[1]] = trace_FP[here]

    return _table(keys, groups, layouts, best_group_FK, best_trace_FKP, score_sum_F, score_n_F)


def _table(
    keys: list[str],
    groups: dict[str, list[int]],
    layouts: list[list[tuple[int, int]]],
    best_group_FK: np.ndarray,
    best_trace_FKP: np.ndarray,
    score_sum_F: np.ndarray,
    score_n_F: np.ndarray,
) -> ParallelTable:
    """The kept slots as `ParallelTable` rows (feature, rank, clip), traces back to back."""
    feature, rank, group, clip, steps, lengths, pieces = [], [], [], [], [], [], []
    for f, k in zip(*np.nonzero(best_group_FK >= 0)):
        g = int(best_group_FK[f, k])
        offset = 0
        for row, (step, n_points) in zip(groups[keys[g]], layouts[g]):
            feature.append(f)
            rank.append(k)
            group.append(g)
            clip.append(row)
            steps.append(step)
            lengths.append(n_points)
            pieces.append(best_trace_FKP[f, k, offset : offset + n_points])
            offset += n_points
    with np.errstate(invalid="ignore"):
        cross_F = np.where(score_n_F > 0, score_sum_F / np.maximum(score_n_F, 1), np.nan)
    return ParallelTable(
        groups=np.array(keys, dtype=str),
        feature=np.array(feature, np.int32),
        rank=np.array(rank, np.int16),
        group=np.array(group, np.int32),
        clip=np.array(clip, np.int32),
        frames_per_point=np.array(steps, np.int16),
        trace=np.concatenate(pieces).astype(np.float16) if pieces else np.zeros(0, np.float16),
        trace_len=np.array(lengths, np.int32),
        cross_lingual=cross_F.astype(np.float32),
    )
