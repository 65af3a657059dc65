"""Scored hypotheses: a feature's label is the per-frame annotation that best *detects* it on held-out frames.

A hypothesis H is one attribute value of a frame (language = es, phone = /s/, es ∧ /s/, word = "conference",
first 100 ms after onset; `pipelines.annotate.frames` supplies the per-frame codes). Shares of a feature's
activation mass have no base rate ("speech" wins on a corpus that is 78% speech), so each H is instead scored
as a predictor of the feature being active, by balanced accuracy:

    BA(H) = (P(H | active) + P(not H | inactive)) / 2 = 1/2 + (P(H | active) - P(H | inactive)) / 2

which is the accuracy of H over equal numbers of active and inactive frames: the detection scoring of
Paulo et al. 2024 ("Automatically interpreting millions of features in LLMs", EleutherAI; Neuronpedia shows
its scores), computed exactly over every held-out frame instead of on a sample. It is 0.5 for any H
independent of the feature, whatever H's base rate, and 1 when H holds on exactly the active frames. A frame
where an attribute does not apply (code -1) counts as "not H" for that attribute's hypotheses. Precision
P(H | active) and recall P(active | H) are reported alongside (the feature read as a detector of H).

`HypothesisCounts` streams the counts, (F, V) per attribute; `score_hypotheses` picks each feature's best
hypothesis (the label), its type and three runner-ups; `random_topk_encoder` and `shuffled_across_clips`
make the controls that calibrate `THRESHOLD`, scored by the same code.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from pipelines.analysis.taxonomy import CONJUNCTIONS, TYPES, UNEXPLAINED, hypothesis_label
from pipelines.sae.base import SparseAutoencoder
from pipelines.sae.config import SAEConfig
from pipelines.sae.topk import TopKSAE

THRESHOLD = 0.75
"""Balanced accuracy a label needs to explain a feature. 0.75 is halfway from chance (0.5) to a perfect
detector (1.0): H holds on at least half of the active frames and almost never elsewhere, or on 3/4 of them
and on at most 1/4 of the inactive ones. A starting point, to be calibrated against the controls (a random
SAE, annotations shuffled across clips): set it where they explain few features."""
MIN_ACTIVE = 20
"""Held-out active frames a feature needs to be scored. With 20, the standard error of P(H | active) is at
most sqrt(0.25 / 20) = 0.11, i.e. 0.056 of balanced accuracy, a fifth of the gap between chance and
`THRESHOLD`; fewer frames are often one or two events in one clip, which every annotation of that clip
fits."""
MIN_VALUE_FRAMES = 10
"""Held-out frames a value needs to be a hypothesis. BA <= 1/2 + P(H | active) / 2 <= 1/2 + frames(H) /
(2 active frames), so with `MIN_ACTIVE` 20 a value on fewer than 10 frames stays below `THRESHOLD` 0.75:
dropping it changes no explained label, only some unexplained features' best guesses."""
TIE_EPSILON = 0.005
"""Scores closer than this to the best are ties, won by the most specific hypothesis (lowest base rate, then a
conjunction over a single attribute). 0.005 of BA is 1 in 100 active frames' worth of P(H | active), below the
sampling noise of a held-out set."""
TOP_N = 3

_BLOCK_CELLS = 1 << 21
"""(feature, value) cells scored at once: 16 MB per float64 temporary, whatever F and V are."""
_BINCOUNT_RATIO = 16
"""`add` counts pairs with one bincount when the table has at most this many cells per pair, else by sorting
them (np.unique), which does not allocate a table-sized array per chunk (F x V is ~80M cells at 16k x 5k)."""


class HypothesisCounts:
    """Streaming counts over held-out frames for `score_hypotheses` (F features; V values per attribute).

    Memory: one (F, V) int64 table per attribute (F x V x 8 bytes; cap rare values with
    `keep_frequent_values` first when a vocabulary is large).
    """

    def __init__(self, n_features: int, vocab_sizes: Mapping[str, int]) -> None:
        self.n_features = n_features
        self.n_frames = 0
        self.active_F = np.zeros(n_features, np.int64)
        """Frames where the feature is active (value > 0)."""
        self.value_frames_V = {a: np.zeros(v, np.int64) for a, v in vocab_sizes.items()}
        """Per attribute: frames with each value."""
        self.active_value_FV = {a: np.zeros((n_features, v), np.int64) for a, v in vocab_sizes.items()}
        """Per attribute: frames where the feature is active and the frame has the value."""

    @property
    def attributes(self) -> list[str]:
        return list(self.value_frames_V)

    def add(
        self,
        active_NK: np.ndarray | torch.Tensor,
        values_NK: np.ndarray | torch.Tensor,
        codes: Mapping[str, np.ndarray],
    ) -> None:
        """Count N frames given as top-k feature ids and values (a TopK SAE's output; values <= 0 are not
        active), with `codes[attribute]` the (N,) int value code of each frame (-1: not applicable)."""
        ids_NK = _as_numpy(active_NK)
        if ids_NK.shape != tuple(values_NK.shape):
            raise ValueError(
                f"feature ids {ids_NK.shape} and values {tuple(values_NK.shape)} differ in shape"
            )
        row_P, slot_P = _positive(values_NK)
        self.add_pairs(len(ids_NK), row_P, ids_NK[row_P, slot_P], codes)

    def add_dense(self, latents_NF: np.ndarray | torch.Tensor, codes: Mapping[str, np.ndarray]) -> None:
        """As `add`, from dense (N, F) latents (`LatentEncoder.encode`): the non-zeros are the active ones."""
        if latents_NF.shape[1] != self.n_features:
            raise ValueError(f"latents have {latents_NF.shape[1]} features, the counts {self.n_features}")
        row_P, feature_P = _positive(latents_NF)
        self.add_pairs(len(latents_NF), row_P, feature_P, codes)

    def add_pairs(
        self, n: int, row_P: np.ndarray, feature_P: np.ndarray, codes: Mapping[str, np.ndarray]
    ) -> None:
        """Count n frames whose active (frame, feature) pairs are (row_P, feature_P), e.g. the scan's
        `Firing` of a chunk, with `codes` as in `add`."""
        feature_P = feature_P.astype(np.int64)
        self.n_frames += n
        self.active_F += np.bincount(feature_P, minlength=self.n_features)
        for attribute, table_FV in self.active_value_FV.items():
            code_N = np.asarray(codes[attribute])
            n_values = table_FV.shape[1]
            if code_N.shape != (n,):
                raise ValueError(f"codes[{attribute!r}] has shape {code_N.shape}, expected ({n},)")
            if n and (code_N.min() < -1 or code_N.max() >= n_values):
                raise ValueError(f"codes[{attribute!r}] out of range -1..{n_values - 1}")
            self.value_frames_V[attribute] += np.bincount(code_N[code_N >= 0], minlength=n_values)
            code_P = code_N[row_P].astype(np.int64)
            on_P = code_P >= 0
            _count_into(table_FV.reshape(-1), feature_P[on_P] * n_values + code_P[on_P])


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _positive(x: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of the entries > 0 (found on the tensor's own device)."""
    if isinstance(x, torch.Tensor):
        rows_t, cols_t = (x > 0).nonzero(as_tuple=True)
        return rows_t.cpu().numpy(), cols_t.cpu().numpy()
    rows, cols = np.nonzero(np.asarray(x) > 0)
    return rows, cols


def _count_into(table: np.ndarray, index: np.ndarray) -> None:
    """table[i] += 1 for each occurrence of i in `index` (a flat view; see `_BINCOUNT_RATIO`)."""
    if table.size <= _BINCOUNT_RATIO * len(index):
        table += np.bincount(index, minlength=table.size)
    else:
        cells, n = np.unique(index, return_counts=True)
        table[cells] += n


def keep_frequent_values(
    codes: Mapping[str, np.ndarray], vocab: Mapping[str, list[str]], min_frames: int = MIN_VALUE_FRAMES
) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Codes and vocabularies without the values on fewer than `min_frames` of the given (held-out) frames,
    which become -1, so `HypothesisCounts` does not hold (F, V) cells for words said once or twice."""
    kept_codes: dict[str, np.ndarray] = {}
    kept_vocab: dict[str, list[str]] = {}
    for attribute, code_N in codes.items():
        names = vocab[attribute]
        keep_V = np.bincount(code_N[code_N >= 0], minlength=len(names)) >= min_frames
        new_V = np.where(keep_V, np.cumsum(keep_V) - 1, -1).astype(np.int32)
        if not len(names):  # an attribute no frame has (e.g. no speaker ids)
            kept_codes[attribute] = np.full(len(code_N), -1, np.int32)
            kept_vocab[attribute] = []
            continue
        kept_codes[attribute] = np.where(code_N >= 0, new_V[np.maximum(code_N, 0)], -1).astype(np.int32)
        kept_vocab[attribute] = [name for name, keep in zip(names, keep_V) if keep]
    return kept_codes, kept_vocab


def balanced_accuracy(
    active_value_FV: np.ndarray, active_F: np.ndarray, value_frames_V: np.ndarray, n_frames: int
) -> np.ndarray:
    """(F, V) float64 balanced accuracy of each value as a predictor of each feature being active
    (module docstring); 0.5 for a feature active on no frame or on every frame (nothing to detect)."""
    joint_FV = active_value_FV.astype(np.float64)
    on_F = active_F.astype(np.float64)
    off_F = n_frames - on_F
    defined_F = (on_F > 0) & (off_F > 0)
    inv_on_F = np.divide(1.0, on_F, out=np.zeros_like(on_F), where=defined_F)
    inv_off_F = np.divide(1.0, off_F, out=np.zeros_like(off_F), where=defined_F)
    ba_FV = joint_FV * inv_on_F[:, None]
    ba_FV -= (value_frames_V[None, :] - joint_FV) * inv_off_F[:, None]
    ba_FV *= 0.5
    ba_FV += 0.5
    return ba_FV


@dataclass
class HypothesisScores:
    """Each feature's label and its scores (F rows)."""

    label: list[str]
    """The best hypothesis ("" for a feature never active on the held-out frames); for an unexplained feature,
    the best guess."""
    label_type: list[str]
    """The label's type (`taxonomy.TYPES`); "unexplained" below the threshold or the minimum active frames."""
    label_attribute: list[str]
    label_value: list[str]
    label_score: np.ndarray
    """(F,) float32 balanced accuracy of the label."""
    label_precision: np.ndarray
    """(F,) float32 P(label | active)."""
    label_recall: np.ndarray
    """(F,) float32 P(active | label)."""
    explained: np.ndarray
    """(F,) bool: scored on enough frames and label_score >= the threshold."""
    active_frames: np.ndarray
    """(F,) int64 held-out frames where the feature is active."""
    note: list[str]
    """Why a feature was not scored ("" when it was)."""
    runner_ups: list[list[dict]]
    """Per feature the next best hypotheses by score: dicts of label, score, precision, recall, type."""
    type_scores: dict[str, np.ndarray]
    """Type -> (F,) float32 best balanced accuracy among that type's hypotheses."""
    language_vs_speaker: np.ndarray
    """(F,) float32 best language BA minus best speaker BA where the label's type is language (positive:
    language explains the feature better than any one voice), NaN elsewhere."""


@dataclass(frozen=True)
class _Attribute:
    name: str
    type: str
    index: int
    valid_V: np.ndarray
    """Values that are hypotheses (on >= min_value_frames frames)."""
    rate_V: np.ndarray
    """Base rate of each value."""
    rank: int
    """0 for a conjunction, 1 otherwise (the tie-break after the base rate)."""


def score_hypotheses(
    counts: HypothesisCounts,
    vocab: Mapping[str, list[str]],
    attribute_types: Mapping[str, str | None],
    *,
    threshold: float = THRESHOLD,
    top_n: int = TOP_N,
    min_active: int = MIN_ACTIVE,
    min_value_frames: int = MIN_VALUE_FRAMES,
    epsilon: float = TIE_EPSILON,
) -> HypothesisScores:
    """Label every feature with its best-detecting hypothesis (module docstring) among the counted attributes
    that `attribute_types` types (others, e.g. an untyped `source`, are not hypotheses).

    The label is the highest balanced accuracy; among hypotheses within `epsilon` of it, the most specific:
    lowest base rate, then a conjunction (language_phone) over a single attribute, then the higher score.
    Vectorised over features, attribute by attribute in bounded blocks: two passes over the (F, V) tables.
    """
    attributes = _typed_attributes(counts, vocab, attribute_types, min_value_frames)
    n_features = counts.n_features
    # the label may be among an attribute's best by score, so one more than the runner-ups
    best_FA, candidates = _best_by_attribute(counts, attributes, top_n + 1)
    best_F = best_FA.max(1, initial=-np.inf)
    label_attr_F, label_value_F, label_score_F = _most_specific(counts, attributes, best_FA, best_F, epsilon)

    active_F = counts.active_F
    scored_F = (active_F > 0) & (label_attr_F >= 0)
    explained_F = scored_F & (active_F >= min_active) & (label_score_F >= threshold)
    joint_F = np.zeros(n_features, np.int64)
    frames_F = np.zeros(n_features, np.int64)
    for attr in attributes:
        on = np.flatnonzero(label_attr_F == attr.index)
        joint_F[on] = counts.active_value_FV[attr.name][on, label_value_F[on]]
        frames_F[on] = counts.value_frames_V[attr.name][label_value_F[on]]
    labels = [
        hypothesis_label(attributes[a].name, vocab[attributes[a].name][v]) if ok else ""
        for a, v, ok in zip(label_attr_F, label_value_F, scored_F)
    ]
    label_types = [attributes[a].type if ok else UNEXPLAINED for a, ok in zip(label_attr_F, explained_F)]
    type_scores = {}
    for kind in dict.fromkeys(a.type for a in attributes):
        kind_F = best_FA[:, [a.index for a in attributes if a.type == kind]].max(1)
        type_scores[kind] = np.where(np.isfinite(kind_F), kind_F, np.nan)
    nan_F = np.full(n_features, np.nan)
    language_vs_speaker = np.where(
        np.array(label_types) == "language",
        type_scores.get("language", nan_F) - type_scores.get("speaker", nan_F),
        np.nan,
    )
    runner_ups = _runner_ups(
        counts, vocab, attributes, candidates, label_attr_F, label_value_F, scored_F, top_n
    )
    return HypothesisScores(
        label=labels,
        label_type=label_types,
        label_attribute=[attributes[a].name if ok else "" for a, ok in zip(label_attr_F, scored_F)],
        label_value=[
            vocab[attributes[a].name][v] if ok else ""
            for a, v, ok in zip(label_attr_F, label_value_F, scored_F)
        ],
        label_score=np.where(scored_F, label_score_F, 0.0).astype(np.float32),
        label_precision=(joint_F / np.maximum(active_F, 1)).astype(np.float32),
        label_recall=(joint_F / np.maximum(frames_F, 1)).astype(np.float32),
        explained=explained_F,
        active_frames=active_F.copy(),
        note=[_note(int(a), ok, min_active) for a, ok in zip(active_F, scored_F)],
        runner_ups=runner_ups,
        type_scores={t: s.astype(np.float32) for t, s in type_scores.items()},
        language_vs_speaker=language_vs_speaker.astype(np.float32),
    )


def _typed_attributes(
    counts: HypothesisCounts,
    vocab: Mapping[str, list[str]],
    attribute_types: Mapping[str, str | None],
    min_value_frames: int,
) -> list[_Attribute]:
    attributes: list[_Attribute] = []
    for name in counts.attributes:
        kind = attribute_types.get(name)
        if kind is None:
            continue
        if kind not in TYPES or kind == UNEXPLAINED:
            raise ValueError(f"attribute {name!r} has type {kind!r}, not one of {TYPES[:-1]}")
        frames_V = counts.value_frames_V[name]
        if len(vocab[name]) != len(frames_V):
            raise ValueError(f"vocab[{name!r}] has {len(vocab[name])} values, the counts {len(frames_V)}")
        attributes.append(
            _Attribute(
                name=name,
                type=kind,
                index=len(attributes),
                valid_V=(frames_V >= max(min_value_frames, 1)),
                rate_V=frames_V / max(counts.n_frames, 1),
                rank=0 if name in CONJUNCTIONS else 1,
            )
        )
    if not attributes:
        raise ValueError(f"none of the counted attributes {counts.attributes} has a type")
    return attributes


def _score_blocks(
    counts: HypothesisCounts, attr: _Attribute, rows: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(feature indices, (f, V) balanced accuracy) over `rows` of the features (all by default), in blocks of
    ~_BLOCK_CELLS cells; values that are not hypotheses score -inf."""
    table_FV = counts.active_value_FV[attr.name]
    frames_V = counts.value_frames_V[attr.name]
    n_rows = counts.n_features if rows is None else len(rows)
    step = max(1, _BLOCK_CELLS // max(table_FV.shape[1], 1))
    for start in range(0, n_rows, step):
        stop = min(start + step, n_rows)
        index_f = np.arange(start, stop) if rows is None else rows[start:stop]
        # all rows: slices of the table (views); chosen rows: a copy of those rows only
        block = slice(start, stop) if rows is None else index_f
        ba_fV = balanced_accuracy(table_FV[block], counts.active_F[block], frames_V, counts.n_frames)
        ba_fV[:, ~attr.valid_V] = -np.inf
        yield index_f, ba_fV


class _Candidates(NamedTuple):
    """Each attribute's best values by score per feature, side by side (C columns)."""

    score_FC: np.ndarray
    value_FC: np.ndarray
    attr_FC: np.ndarray


def _best_by_attribute(
    counts: HypothesisCounts, attributes: list[_Attribute], top_m: int
) -> tuple[np.ndarray, _Candidates]:
    """(F, A) each attribute's best score per feature, and its top_m values by score (the first pass)."""
    best_FA = np.full((counts.n_features, len(attributes)), -np.inf)
    scores, values, attrs = [], [], []
    for attr in attributes:
        score_FM = np.full((counts.n_features, min(top_m, len(attr.valid_V))), -np.inf)
        value_FM = np.zeros(score_FM.shape, np.int64)
        for rows, ba_fV in _score_blocks(counts, attr):
            best_FA[rows, attr.index] = ba_fV.max(1, initial=-np.inf)
            if score_FM.shape[1]:
                top_fM = _top_columns(ba_fV, score_FM.shape[1])
                value_FM[rows] = top_fM
                score_FM[rows] = np.take_along_axis(ba_fV, top_fM, 1)
        scores.append(score_FM)
        values.append(value_FM)
        attrs.append(np.full(score_FM.shape, attr.index))
    return best_FA, _Candidates(
        np.concatenate(scores, 1), np.concatenate(values, 1), np.concatenate(attrs, 1)
    )


def _top_columns(x_fV: np.ndarray, m: int) -> np.ndarray:
    """(f, m) column indices of each row's m largest entries, in no particular order."""
    if m >= x_fV.shape[1]:
        return np.broadcast_to(np.arange(x_fV.shape[1]), x_fV.shape).copy()
    return np.argpartition(-x_fV, m - 1, axis=1)[:, :m]


def _most_specific(
    counts: HypothesisCounts,
    attributes: list[_Attribute],
    best_FA: np.ndarray,
    best_F: np.ndarray,
    epsilon: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(attribute index, value, score) per feature of the label: among hypotheses within epsilon of the best,
    the lowest base rate, then a conjunction, then the higher score (attribute -1 where there is none).
    Re-scores only the rows where an attribute comes within epsilon of the feature's best."""
    n_features = len(best_F)
    attr_F = np.full(n_features, -1)
    value_F = np.zeros(n_features, np.int64)
    score_F = np.full(n_features, -np.inf)
    rate_F = np.full(n_features, np.inf)
    rank_F = np.full(n_features, 2)
    floor_F = best_F - epsilon
    for attr in attributes:
        rows = np.flatnonzero(np.isfinite(best_FA[:, attr.index]) & (best_FA[:, attr.index] >= floor_F))
        for block, ba_fV in _score_blocks(counts, attr, rows):
            window_fV = ba_fV >= floor_F[block, None]
            rate_fV = np.where(window_fV, attr.rate_V[None, :], np.inf)
            low_f = rate_fV.min(1)
            tie_fV = window_fV & (rate_fV == low_f[:, None])
            v_f = np.where(tie_fV, ba_fV, -np.inf).argmax(1)
            s_f = ba_fV[np.arange(len(v_f)), v_f]
            cur_rate, cur_rank, cur_score = rate_F[block], rank_F[block], score_F[block]
            better_f = (low_f < cur_rate) | (
                (low_f == cur_rate) & ((attr.rank < cur_rank) | ((attr.rank == cur_rank) & (s_f > cur_score)))
            )
            take = block[better_f]
            attr_F[take], value_F[take], score_F[take] = attr.index, v_f[better_f], s_f[better_f]
            rate_F[take], rank_F[take] = low_f[better_f], attr.rank
    return attr_F, value_F, score_F


def _runner_ups(
    counts: HypothesisCounts,
    vocab: Mapping[str, list[str]],
    attributes: list[_Attribute],
    candidates: _Candidates,
    label_attr_F: np.ndarray,
    label_value_F: np.ndarray,
    scored_F: np.ndarray,
    top_n: int,
) -> list[list[dict]]:
    """The top_n best candidates per feature other than its label."""
    value_FC, attr_FC = candidates.value_FC, candidates.attr_FC
    is_label_FC = (attr_FC == label_attr_F[:, None]) & (value_FC == label_value_F[:, None])
    score_FC = np.where(is_label_FC, -np.inf, candidates.score_FC)
    order_FN = np.argsort(-score_FC, axis=1, kind="stable")[:, :top_n]
    out: list[list[dict]] = []
    for f in range(counts.n_features):
        entries = []
        for c in order_FN[f] if scored_F[f] else ():
            if not np.isfinite(score_FC[f, c]):
                break
            attr, v = attributes[attr_FC[f, c]], int(value_FC[f, c])
            joint = int(counts.active_value_FV[attr.name][f, v])
            entries.append(
                {
                    "label": hypothesis_label(attr.name, vocab[attr.name][v]),
                    "score": float(score_FC[f, c]),
                    "precision": joint / max(int(counts.active_F[f]), 1),
                    "recall": joint / max(int(counts.value_frames_V[attr.name][v]), 1),
                    "type": attr.type,
                }
            )
        out.append(entries)
    return out


def _note(active: int, scored: bool, min_active: int) -> str:
    if active == 0:
        return "not active on the held-out frames"
    if not scored:
        return "no hypothesis has enough held-out frames"
    if active < min_active:
        return f"too few held-out active frames to score ({active} < {min_active})"
    return ""


def type_counts(scores: HypothesisScores, live_mask: np.ndarray) -> dict[str, int]:
    """Live features (fired at least once anywhere) per type, every type listed; dead ones are not typed."""
    kinds = np.array(scores.label_type, dtype=object)[np.asarray(live_mask, bool)]
    return {t: int((kinds == t).sum()) for t in TYPES}


def explained_share(scores: HypothesisScores, live_mask: np.ndarray) -> float:
    """Share of the live features that a hypothesis explains (0 when none is live)."""
    live = np.asarray(live_mask, bool)
    return float(scores.explained[live].mean()) if live.any() else 0.0


# --- controls ------------------------------------------------------------------------------------------


def random_topk_encoder(
    d_in: int, d_sae: int, k: int, seed: int = 0, like: SparseAutoencoder | None = None
) -> TopKSAE:
    """A TopK SAE of the same width and k with random unit-norm encoder rows (the decoder tied to them) and
    no encoder bias: the control for how much a labelling explains without learned features (usable
    wherever the trained SAE's `LatentEncoder` is).

    With `like` (the trained SAE), it subtracts the same input centre `b_dec` (else a large shared offset,
    as in Whisper's encoder output, makes the same few latents win on every frame), its encoder rows take
    the median norm of the trained ones, so typical pre-activations are of comparable size, and it lives on
    the trained SAE's device and dtype.
    """
    sae = TopKSAE(SAEConfig(d_in=d_in, d_sae=d_sae, k=k))
    sae.reset_parameters(torch.Generator().manual_seed(seed))
    if like is not None:
        if (like.d_in, like.d_sae) != (d_in, d_sae):
            raise ValueError(f"like is {like.d_in} -> {like.d_sae}, asked for {d_in} -> {d_sae}")
        with torch.no_grad():
            sae.b_dec.copy_(like.b_dec.detach().float().cpu())
            sae.W_enc.mul_(like.W_enc.detach().float().norm(dim=0).median().cpu())
        sae.to(device=like.W_dec.device, dtype=like.W_dec.dtype)
    return sae.eval()


def shuffled_across_clips(
    codes: Mapping[str, np.ndarray], clip_row: np.ndarray, seed: int = 0
) -> dict[str, np.ndarray]:
    """The control for chance alignment: each clip's frames take another clip's annotations, frame by frame
    (repeated or truncated to its length), so the attributes' marginals (exactly when clips are of equal
    length) and each clip's internal structure are kept but nothing lines up with the audio any more. Clips
    donate in one random cycle, so no clip keeps its own; every attribute moves together (a conjunction stays
    consistent with its parts)."""
    clip_row = np.asarray(clip_row)
    order = np.argsort(clip_row, kind="stable")
    _, starts, lengths = np.unique(clip_row[order], return_index=True, return_counts=True)
    n_clips = len(starts)
    if n_clips < 2:
        raise ValueError("shuffling across clips needs at least two clips")
    cycle = np.random.default_rng(seed).permutation(n_clips)
    donor_C = np.empty(n_clips, np.int64)
    donor_C[cycle] = np.roll(cycle, -1)
    clip_of = np.repeat(np.arange(n_clips), lengths)
    position = np.arange(len(order)) - starts[clip_of]
    donor = donor_C[clip_of]
    source = np.empty(len(order), np.int64)
    source[order] = order[starts[donor] + position % lengths[donor]]
    return {attribute: np.asarray(code_N)[source] for attribute, code_N in codes.items()}
