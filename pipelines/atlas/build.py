"""`build`: turn a saved analysis into `atlas.duckdb` (a new file swapped in atomically by `write_atlas`).

This step is cheap (no Whisper): it reads `data/runs/<run>/analysis/`, the corpus manifest, the SAE's
cfg.json and metrics.json, and the activation meta, and lays them out in the schema of
`pipelines.atlas.schema`, every per-feature table sorted by feature id. The explore tables (frame codes,
similar-moment index, feature map: `pipelines.atlas.explore`) encode the shards once more with the SAE and
map its decoder. The finished file's feature pages are
then rendered once by the web layer's page code and stored in it (`feature_pages`), so the server answers a
first visit with a lookup instead of a render.
"""

from __future__ import annotations

import importlib
import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines.analysis.result import KINDS, AnalysisResult, ParallelTable
from pipelines.annotate.frames import FrameAnnotations
from pipelines.atlas.explore import ExploreInputs, explore_inputs, explore_tables
from pipelines.atlas.schema import FRAME_SECONDS
from pipelines.atlas.tables import density_histogram_table, histogram_columns, list_array, share_table
from pipelines.atlas.writer import Derive, write_atlas
from pipelines.corpus.manifest import SPEECH, Clip, read_manifest
from pipelines.errors import AtlasError
from pipelines.paths import RunPaths

log = logging.getLogger(__name__)

PAGE_RENDERER = "backend.rendering:render_stored_pages"
"""The web layer's feature-page renderer, found by name as `whisper-atlas serve` finds the app: pipelines
never import the backend, and an install without it still builds (its server renders pages on request)."""


def page_renderer() -> Derive | None:
    """The `derive` step that stores every feature page in a new atlas, or None without the web layer."""
    module, _, name = PAGE_RENDERER.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        log.warning("feature pages not pre-rendered (%s): the server will render them on request", exc)
        return None


class StaleAnalysisError(AtlasError):
    """The analysis was made from another corpus than the one given."""


def build_atlas(run: RunPaths, corpus: Path) -> Path:
    """Write `run.atlas` from the run's analysis and `corpus`; on any error the old atlas stays as it was."""
    result = AnalysisResult.load(run.analysis)
    clips = read_manifest(corpus)
    keys = [t.key for t in result.clip_text]
    if keys != [c.id for c in clips]:
        raise StaleAnalysisError(
            f"{run.analysis} holds an analysis of another manifest than {corpus}: run `whisper-atlas analyze`"
        )
    sae_cfg = _read_json(run.sae / "cfg.json")
    metrics = _read_json(run.sae / "metrics.json")
    density_F = result.features.fire_count / max(result.meta.n_frames, 1)
    explore = explore_inputs(run, density_F, result.clips.n_frames)
    steering = _read_json(run.root / "steering" / "presets.json") or None  # `whisper-atlas calibrate`
    tables = atlas_tables(result, clips, corpus, sae_cfg, metrics, explore, steering)
    return write_atlas(run.atlas, tables, derive=page_renderer())


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def atlas_tables(
    result: AnalysisResult,
    clips: list[Clip],
    corpus: Path,
    sae_cfg: dict,
    metrics: dict,
    explore: ExploreInputs | None = None,
    steering: dict | None = None,
) -> dict[str, pa.Table]:
    """Every atlas table, as Arrow tables whose columns match the schema (the explore tables from `explore`;
    left empty without it).

    The one constructor of an atlas's content: `build_atlas` feeds it the saved analysis, and the tests'
    synthetic atlas (`tests/fixtures/synthetic_atlas.py`) an invented one, so neither can drift.
    """
    meta, feats = result.meta, result.features
    n_features = meta.n_features
    ids = np.arange(n_features, dtype=np.int32)
    live = feats.fire_count > 0
    total_mass = np.maximum(feats.act_sum, 1e-30)[:, None]
    lang_frames = np.asarray(meta.lang_frames, np.float64)
    cat_frames = np.asarray(meta.cat_frames, np.float64)
    n_frames = max(meta.n_frames, 1)
    lang_act = feats.lang_mass / total_mass
    cat_act = feats.cat_mass / total_mass
    lang_sel = lang_act / np.maximum(lang_frames / n_frames, 1e-30)
    cat_sel = cat_act / np.maximum(cat_frames / n_frames, 1e-30)
    speech = meta.categories.index(SPEECH)

    features = pa.table(
        {
            "id": ids,
            "density": feats.fire_count / n_frames,
            "max_act": feats.max_act,
            "mean_act": (feats.act_sum / np.maximum(feats.fire_count, 1)).astype(np.float32),
            "label": result.labels,
            "label_score": feats.label_score,
            "label_source": ["auto"] * n_features,
            **_interpretation_columns(result),
            **_top_group("top_language", meta.languages, lang_sel, live),
            **_top_group("top_category", meta.categories, cat_sel, live),
            "speech_fraction": np.where(live, cat_act[:, speech], 0.0).astype(np.float32),
            "top_words": pa.array(result.top_words, pa.list_(pa.string())),
            **histogram_columns(feats.hist_counts, np.asarray(meta.grid_edges)),
            "neighbours": _padded_rows(feats.neighbours, feats.neighbours >= 0),
            "neighbour_cos": _padded_rows(feats.neighbour_cos, feats.neighbours >= 0),
            "coactive": _padded_rows(feats.coactive, feats.coactive >= 0),
            "coactive_score": _padded_rows(feats.coactive_score, feats.coactive >= 0),
            "cross_lingual": _cross_lingual(result.parallel, n_features),
        }
    )
    live_ids = ids[live]
    languages = share_table(
        "language",
        meta.languages,
        live_ids,
        lang_act[live],
        lang_frames / n_frames,
        feats.lang_fires[live] / np.maximum(lang_frames, 1),
    )
    categories = share_table(
        "category",
        meta.categories,
        live_ids,
        cat_act[live],
        cat_frames / n_frames,
        feats.cat_fires[live] / np.maximum(cat_frames, 1),
    )
    n_eff = len(meta.effect_languages)
    effects = pa.table(
        {
            "feature_id": np.repeat(live_ids, n_eff),
            "language": np.tile(np.array(meta.effect_languages, dtype=str), len(live_ids)),
            "effect": feats.effects[live].ravel().astype(np.float32),
        }
    )
    explored, explore_info = explore_tables(explore, feats.fire_count / n_frames) if explore else ({}, None)
    return {
        "run": _run_table(result, clips, sae_cfg, metrics, explore_info, steering),
        **_clip_tables(result, clips, corpus),
        "features": features,
        "examples": _examples_table(result),
        "feature_parallel": parallel_table(result.parallel),
        "feature_languages": languages,
        "feature_categories": categories,
        "feature_language_effects": effects,
        "density_histogram": density_histogram_table(feats.fire_count / n_frames),
        **explored,
    }


INTERPRETATION_FLOATS = ("label_precision", "label_recall", "language_vs_speaker", "stability")
"""The `features` columns taken from `Interpretation` arrays of the same name (NaN stored as NULL)."""


def _interpretation_columns(result: AnalysisResult) -> dict[str, object]:
    """The scored-label columns: from the analysis's interpretation, or '' and NULLs when it has none (an
    analysis made before labels were scored still builds)."""
    n_features = result.meta.n_features
    found = result.interpretation
    if found is None:
        empty = pa.nulls(n_features, pa.float32())
        return {
            "label_type": [""] * n_features,
            **dict.fromkeys(INTERPRETATION_FLOATS, empty),
            "runner_ups": ["[]"] * n_features,
        }
    floats = {name: np.asarray(getattr(found, name), np.float32) for name in INTERPRETATION_FLOATS}
    return {
        "label_type": found.label_type,
        **{name: pa.array(values, mask=np.isnan(values)) for name, values in floats.items()},
        "runner_ups": [json.dumps(r, ensure_ascii=False) for r in found.runner_ups],
    }


def _cross_lingual(parallel: ParallelTable | None, n_features: int) -> pa.Array:
    """Each feature's cross-lingual score (NULL where NaN, or everywhere without a parallel table)."""
    if parallel is None:
        return pa.nulls(n_features, pa.float32())
    score_F = np.asarray(parallel.cross_lingual, np.float32)
    if score_F.shape != (n_features,):
        raise ValueError(f"parallel table scores {score_F.shape[0]} features, the analysis has {n_features}")
    return pa.array(score_F, mask=np.isnan(score_F))


def parallel_table(parallel: ParallelTable | None) -> pa.Table:
    """`feature_parallel` rows from the analysis's parallel table (none without one), sorted by feature."""
    if parallel is None or len(parallel.feature) == 0:
        return pa.table(
            {
                "feature_id": pa.array([], pa.int32()),
                "rank": pa.array([], pa.int32()),
                "clip_id": pa.array([], pa.int32()),
                "group_key": pa.array([], pa.string()),
                "frames_per_point": pa.array([], pa.int32()),
                "peak": pa.array([], pa.float32()),
                "trace": pa.array([], pa.binary()),
            }
        )
    trace = np.asarray(parallel.trace, dtype="<f2")
    lengths = np.asarray(parallel.trace_len, np.int64)
    offsets = np.r_[0, np.cumsum(lengths)]
    order = np.lexsort((parallel.rank, parallel.feature))  # stable: a group's clips keep their order
    peaks = np.array(
        [float(trace[offsets[i] : offsets[i + 1]].max(initial=0.0)) for i in range(len(lengths))], np.float32
    )
    return pa.table(
        {
            "feature_id": parallel.feature[order].astype(np.int32),
            "rank": parallel.rank[order].astype(np.int32),
            "clip_id": parallel.clip[order].astype(np.int32),
            "group_key": np.asarray(parallel.groups, dtype=str)[parallel.group[order]],
            "frames_per_point": parallel.frames_per_point[order].astype(np.int32),
            "peak": peaks[order],
            "trace": pa.array([trace[offsets[i] : offsets[i + 1]].tobytes() for i in order], pa.binary()),
        }
    )


def phone_table(annotations: FrameAnnotations | None) -> pa.Table:
    """`clip_phones`: per clip, the runs of consecutive frames with the same phone code (within one word) as
    (phone, start s, end s); frames without a phone are left out. Empty without annotations."""
    if annotations is None or "phone" not in annotations.codes or annotations.n_frames == 0:
        return pa.table(
            {
                "clip_id": pa.array([], pa.int32()),
                "idx": pa.array([], pa.int32()),
                "phone": pa.array([], pa.string()),
                "start": pa.array([], pa.float32()),
                "end": pa.array([], pa.float32()),
            }
        )
    order = np.lexsort((annotations.frame, annotations.clip_row))
    phone_N = annotations.codes["phone"][order]
    word_N = annotations.codes.get("word", np.zeros_like(annotations.codes["phone"]))[order]
    keep = phone_N >= 0
    clip_N, frame_N = annotations.clip_row[order][keep], annotations.frame[order][keep]
    phone_N, word_N = phone_N[keep], word_N[keep]
    new = np.r_[
        True,
        (clip_N[1:] != clip_N[:-1])
        | (frame_N[1:] != frame_N[:-1] + 1)
        | (phone_N[1:] != phone_N[:-1])
        | (word_N[1:] != word_N[:-1]),
    ]
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], len(clip_N)]
    run_clip = clip_N[starts]
    first_of_clip = np.flatnonzero(np.r_[True, run_clip[1:] != run_clip[:-1]])
    idx = np.arange(len(starts)) - np.repeat(first_of_clip, np.diff(np.r_[first_of_clip, len(starts)]))
    names = np.asarray(annotations.vocab["phone"], dtype=object)
    return pa.table(
        {
            "clip_id": run_clip.astype(np.int32),
            "idx": idx.astype(np.int32),
            "phone": pa.array(names[phone_N[starts]].tolist(), pa.string()),
            "start": (frame_N[starts] * FRAME_SECONDS).astype(np.float32),
            "end": ((frame_N[ends - 1] + 1) * FRAME_SECONDS).astype(np.float32),
        }
    )


def _top_group(
    column: str, names: list[str], selectivity_FK: np.ndarray, live: np.ndarray
) -> dict[str, object]:
    """The group with the highest selectivity per feature ('' and 0 for dead features or no groups)."""
    if not names:
        return {column: [""] * len(live), f"{column}_selectivity": np.zeros(len(live), np.float32)}
    best = selectivity_FK.argmax(1)
    value = selectivity_FK[np.arange(len(live)), best]
    has = live & (value > 0)
    return {
        column: np.where(has, np.array(names, dtype=str)[best], ""),
        f"{column}_selectivity": np.where(has, value, 0.0).astype(np.float32),
    }


def _padded_rows(matrix: np.ndarray, keep: np.ndarray) -> pa.Array:
    """One list per row with the entries flagged in `keep` (drops -1 padding)."""
    return list_array(matrix[keep], keep.sum(1))


def _examples_table(result: AnalysisResult) -> pa.Table:
    ex = result.examples
    return pa.table(
        {
            "feature_id": ex.feature,
            "kind": np.array(KINDS, dtype=str)[ex.kind],
            "rank": ex.rank,
            "quantile": ex.quantile,
            "clip_id": ex.clip,
            "start_frame": ex.start,
            "end_frame": ex.end,
            "peak_frame": ex.peak,
            "peak_act": ex.peak_act,
            "acts": list_array(ex.acts.astype(np.float32), ex.acts_len),
        }
    )


def _clip_tables(result: AnalysisResult, clips: list[Clip], corpus: Path) -> dict[str, pa.Table]:
    table, text = result.clips, result.clip_text
    clip_rows = pa.table(
        {
            "id": np.arange(len(clips), dtype=np.int32),
            "key": [c.id for c in clips],
            "category": [c.category for c in clips],
            "language": [c.language for c in clips],
            "transcript": [c.transcript for c in clips],
            "hypothesis": [t.hypothesis for t in text],
            "source": [c.source for c in clips],
            "licence": [c.licence for c in clips],
            "group_key": [c.group for c in clips],
            "speaker": [c.speaker for c in clips],
            "duration": [float(c.duration) for c in clips],
            "n_frames": table.n_frames.astype(np.int32),
            "audio_path": [str((corpus / c.path).resolve()) for c in clips],
        }
    )
    n_mels = int(table.n_mels)
    offsets = np.r_[0, np.cumsum(table.mel_frames.astype(np.int64) * n_mels)]
    has_mel = np.flatnonzero(table.mel_frames > 0)
    mels = pa.table(
        {
            "clip_id": has_mel.astype(np.int32),
            "n_mels": np.full(len(has_mel), n_mels, np.int32),
            "n_frames": table.mel_frames[has_mel],
            "mel": pa.array([table.mel[offsets[i] : offsets[i + 1]].tobytes() for i in has_mel], pa.binary()),
            "vmin": table.vmin[has_mel],
            "vmax": table.vmax[has_mel],
        }
    )
    words = [(i, idx, w, s, e) for i, t in enumerate(text) for idx, (w, s, e) in enumerate(t.words)]
    word_rows = pa.table(
        {
            "clip_id": pa.array([w[0] for w in words], pa.int32()),
            "idx": pa.array([w[1] for w in words], pa.int32()),
            "word": pa.array([w[2] for w in words], pa.string()),
            "start": pa.array([w[3] for w in words], pa.float32()),
            "end": pa.array([w[4] for w in words], pa.float32()),
        }
    )
    return {
        "clips": clip_rows,
        "clip_mels": mels,
        "clip_words": word_rows,
        "clip_phones": phone_table(result.annotations),
    }


def _run_table(
    result: AnalysisResult,
    clips: list[Clip],
    sae_cfg: dict,
    metrics: dict,
    explore: dict | None,
    steering: dict | None = None,
) -> pa.Table:
    meta = result.meta
    minutes = FRAME_SECONDS / 60
    info = {
        "model": meta.model,
        "layer": meta.layer,
        "site": f"encoder layer {meta.layer}",
        "n_features": meta.n_features,
        "sae": sae_cfg,
        "metrics": metrics,
        "corpus": {
            "name": meta.corpus,
            "n_clips": int((result.clips.n_frames > 0).sum()),
            "n_frames": meta.n_frames,
            "minutes": meta.n_frames * minutes,
            "minutes_by_language": {k: n * minutes for k, n in zip(meta.languages, meta.lang_frames)},
            "minutes_by_category": {k: n * minutes for k, n in zip(meta.categories, meta.cat_frames)},
            "clips_by_category": {
                k: sum(c.category == k for c, n in zip(clips, result.clips.n_frames) if n > 0)
                for k in meta.categories
            },
        },
        "languages": meta.languages,
        "categories": meta.categories,
        "effect_languages": meta.effect_languages,
        "analysis": {
            "config": meta.config,
            "notes": meta.notes,
            "timings": meta.timings,
            "effect_clips": meta.effect_clips,
            "transcriber": meta.transcriber,
        },
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if result.interpretation is not None:
        info["interpretation"] = result.interpretation.summary
    if explore is not None:
        info["explore"] = explore
    if steering is not None:
        info["steering"] = steering
    return pa.table({"key": list(info), "value": [json.dumps(v, ensure_ascii=False) for v in info.values()]})
