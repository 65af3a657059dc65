"""A synthetic but plausible atlas, for the server's tests and load benchmark: no model, no corpus, seconds.

Everything goes through `write_atlas`, so the file has exactly the real schema. The numbers follow the shapes
a real analysis produces (log-uniform densities, a few dead features, per-frame activations peaked inside each
window, language/category selectivities around one label), and each clip points at a real FLAC file (short
tones, chords, noise or silence) written to `<atlas stem>_audio/` next to the atlas, so audio endpoints work.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines.analysis.config import AnalysisConfig
from pipelines.atlas.schema import FRAME_SECONDS
from pipelines.atlas.tables import density_histogram_table, histogram_columns, list_array, share_table
from pipelines.atlas.writer import write_atlas
from pipelines.audio import SAMPLE_RATE, write_flac
from pipelines.corpus.manifest import CATEGORIES, SPEECH

LANGUAGES = ("en", "es", "fr", "it", "ru", "cs", "nl")
WORDS = {
    "en": ["hello", "weather", "goodbye", "please", "number", "thank", "you", "call"],
    "es": ["hola", "buenos", "días", "gracias", "número", "por", "favor", "adiós"],
    "fr": ["bonjour", "merci", "au", "revoir", "numéro", "s'il", "vous", "plaît"],
    "it": ["ciao", "grazie", "buongiorno", "numero", "per", "favore", "arrivederci", "prego"],
    "ru": ["привет", "спасибо", "номер", "пожалуйста", "до", "свидания", "да", "нет"],
    "cs": ["ahoj", "děkuji", "prosím", "ryba", "voda", "ano", "ne", "dobrý"],
    "nl": ["hallo", "dank", "je", "vis", "water", "ja", "nee", "goed"],
}
MEL_BINS = 80


def _audio(category: str, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """A short, cheap-to-compress signal whose sound matches its category."""
    t = np.arange(n_samples) / SAMPLE_RATE
    if category == "silence":
        return np.zeros(n_samples, np.float32)
    if category == "noise":
        return (0.05 * rng.standard_normal(n_samples)).astype(np.float32)
    if category == "music":
        freqs = 220.0 * 2 ** (np.array([0, 4, 7]) / 12)
        return (0.1 * np.sin(2 * np.pi * freqs[:, None] * t).sum(0)).astype(np.float32)
    pitch = float(rng.uniform(110, 440))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) if category == SPEECH else np.ones_like(t)
    return (0.2 * envelope * np.sin(2 * np.pi * pitch * t)).astype(np.float32)


def _clips(audio_dir: Path, n_clips: int, rng: np.random.Generator) -> tuple[pa.Table, pa.Table, pa.Table]:
    """clips, clip_mels and clip_words tables, plus the FLAC files they point at."""
    audio_dir.mkdir(parents=True, exist_ok=True)
    n_speech = max(1, int(n_clips * 0.75))
    categories = [SPEECH] * n_speech + [
        CATEGORIES[1 + i % (len(CATEGORIES) - 1)] for i in range(n_clips - n_speech)
    ]
    clip_rows, mel_rows, word_rows = [], [], []
    for i, category in enumerate(categories):
        language = LANGUAGES[i % len(LANGUAGES)] if category == SPEECH else ""
        duration = round(float(rng.uniform(1.0, 4.0)), 3)
        n_samples = int(duration * SAMPLE_RATE)
        n_frames = math.ceil(n_samples / 320)
        key = f"synthetic-{category}-{language or 'x'}-{i:04d}"
        audio_path = (audio_dir / f"{key}.flac").resolve()
        write_flac(audio_path, _audio(category, n_samples, rng))
        words: list[str] = []
        if category == SPEECH:
            words = list(rng.choice(WORDS[language], size=int(rng.integers(2, 7))))
            edges = np.sort(rng.uniform(0.0, duration, size=2 * len(words)))
            for idx, word in enumerate(words):
                word_rows.append(
                    {
                        "clip_id": i,
                        "idx": idx,
                        "word": word,
                        "start": edges[2 * idx],
                        "end": edges[2 * idx + 1],
                    }
                )
        text = " ".join(words)
        clip_rows.append(
            {
                "id": i,
                "key": key,
                "category": category,
                "language": language,
                "transcript": text,
                "hypothesis": text,
                "source": "synthetic",
                "licence": "CC0-1.0",
                "group_key": f"group-{i // len(LANGUAGES)}" if category == SPEECH else "",
                "speaker": f"voice-{i % 5}",
                "duration": duration,
                "n_frames": n_frames,
                "audio_path": str(audio_path),
            }
        )
        n_mel = 2 * n_frames
        mel = np.linspace(255, 40, MEL_BINS)[:, None] * (0.6 + 0.4 * rng.random((1, n_mel)))
        mel_rows.append(
            {
                "clip_id": i,
                "n_mels": MEL_BINS,
                "n_frames": n_mel,
                "mel": mel.astype(np.uint8).tobytes(),
                "vmin": -1.0,
                "vmax": 1.5,
            }
        )
    return pa.Table.from_pylist(clip_rows), pa.Table.from_pylist(mel_rows), pa.Table.from_pylist(word_rows)


def _shares(
    n_groups: int, frame_share: np.ndarray, top: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(act_share, fire_rate) per (feature, group): each feature leans toward its `top` group."""
    n_f = len(top)
    mass = rng.random((n_f, n_groups)) * frame_share
    mass[np.arange(n_f), top] += rng.uniform(0.5, 3.0, n_f) * frame_share[top]
    act_share = mass / mass.sum(1, keepdims=True)
    return act_share, act_share * rng.uniform(0.001, 0.2, (n_f, 1))


def write_synthetic_atlas(
    path: Path,
    n_features: int = 16384,
    n_clips: int = 120,
    seed: int = 0,
    *,
    n_top: int = 24,
    n_quantile: int = 16,
    window_frames: int = 75,
    dead_fraction: float = 0.02,
) -> Path:
    """Write a synthetic atlas at `path` (replacing any old one atomically) and its FLAC files beside it.

    Each live feature gets `n_top` top examples and `n_quantile` quantile examples (8 activation bins,
    n_quantile // 8 per bin) of `window_frames` frames around the peak, clipped to the clip. Dead features
    (`dead_fraction`) have density 0, no examples and no label.
    """
    rng = np.random.default_rng(seed)
    clips, clip_mels, clip_words = _clips(path.parent / f"{path.stem}_audio", n_clips, rng)
    clip_frames = clips.column("n_frames").to_numpy()
    clip_lang = clips.column("language").to_pylist()
    clip_cat = clips.column("category").to_pylist()
    total_frames = int(clip_frames.sum())

    ids = np.arange(n_features, dtype=np.int32)
    dead = rng.random(n_features) < dead_fraction
    density = np.where(dead, 0.0, 10 ** rng.uniform(np.log10(1 / total_frames), -0.7, n_features))
    max_act = np.where(dead, 0.0, rng.uniform(2.0, 40.0, n_features)).astype(np.float32)
    mean_act = (max_act * rng.uniform(0.2, 0.5, n_features)).astype(np.float32)
    live = ids[~dead]

    lang_frames = np.array(
        [clip_frames[[i for i, lang in enumerate(clip_lang) if lang == L]].sum() for L in LANGUAGES]
    )
    cat_frames = np.array(
        [clip_frames[[i for i, c in enumerate(clip_cat) if c == C]].sum() for C in CATEGORIES]
    )
    top_lang = rng.integers(0, len(LANGUAGES), n_features)
    top_cat = np.where(rng.random(n_features) < 0.7, 0, rng.integers(1, len(CATEGORIES), n_features))
    lang_frame_share = np.maximum(lang_frames, 1) / total_frames
    cat_frame_share = np.maximum(cat_frames, 1) / total_frames
    lang_act, lang_rate = _shares(len(LANGUAGES), lang_frame_share, top_lang[~dead], rng)
    cat_act, cat_rate = _shares(len(CATEGORIES), cat_frame_share, top_cat[~dead], rng)
    languages = share_table("language", list(LANGUAGES), live, lang_act, lang_frame_share, lang_rate)
    categories = share_table("category", list(CATEGORIES), live, cat_act, cat_frame_share, cat_rate)
    lang_sel = lang_act / lang_frame_share
    cat_sel = cat_act / cat_frame_share
    speech_fraction = np.zeros(n_features, np.float32)
    speech_fraction[live] = cat_act[:, 0]

    labels = np.full(n_features, "", dtype=object)
    top_words_col: list[list[str]] = [[] for _ in range(n_features)]
    for row, f in enumerate(live):
        if top_cat[f] == 0:
            lang = LANGUAGES[top_lang[f]]
            words = list(rng.choice(WORDS[lang], size=3, replace=False))
            top_words_col[f] = words
            labels[f] = f"{lang} speech · '{words[0]}'"
        else:
            labels[f] = CATEGORIES[top_cat[f]]
    label_score = np.where(dead, 0.0, rng.uniform(0.1, 0.95, n_features)).astype(np.float32)

    grid = AnalysisConfig().grid_edges()
    top_bin = np.clip(np.searchsorted(grid, max_act) - 1, 0, len(grid) - 2)
    below = top_bin[:, None] - np.arange(len(grid) - 1)[None, :]  # bins under each feature's max
    hist_counts = np.where(
        (below >= 0) & (below < 12), rng.uniform(0.3, 0.9, (n_features, 1)) ** np.abs(below - 6), 0.0
    )
    hist_counts *= (density * total_frames)[:, None] / np.maximum(hist_counts.sum(1, keepdims=True), 1e-9)
    hist_counts = np.maximum(np.round(hist_counts), hist_counts > 0)  # a live feature fires at least once
    hist_counts = np.where(dead[:, None], 0, hist_counts).astype(np.int64)

    others = ids[:, None] + rng.integers(1, n_features, (n_features, 8))
    neighbours = (others % n_features).astype(np.int32)
    neighbour_cos = np.sort(rng.uniform(0.1, 0.9, (n_features, 8)))[:, ::-1].astype(np.float32)
    coactive = ((others + 1) % n_features).astype(np.int32)
    coactive_score = np.sort(rng.uniform(0.0, 0.6, (n_features, 8)))[:, ::-1].astype(np.float32)
    features = pa.table(
        {
            "id": ids,
            "density": density,
            "max_act": max_act,
            "mean_act": mean_act,
            "label": labels.astype(str),
            "label_score": label_score,
            "label_source": np.full(n_features, "auto"),
            "top_language": np.where(dead, "", np.array(LANGUAGES)[top_lang]),
            "top_language_selectivity": _scatter(n_features, live, lang_sel.max(1)),
            "top_category": np.where(dead, "", np.array(CATEGORIES)[top_cat]),
            "top_category_selectivity": _scatter(n_features, live, cat_sel.max(1)),
            "speech_fraction": speech_fraction,
            "top_words": pa.array(top_words_col, pa.list_(pa.string())),
            **histogram_columns(hist_counts, grid),
            "neighbours": _rows(neighbours, np.zeros(n_features, bool)),
            "neighbour_cos": _rows(neighbour_cos, np.zeros(n_features, bool)),
            "coactive": _rows(coactive, dead),
            "coactive_score": _rows(coactive_score, dead),
        }
    )

    examples = _examples(live, max_act, clip_frames, n_top, n_quantile, window_frames, rng)
    effects = pa.table(
        {
            "feature_id": np.repeat(live, len(LANGUAGES)),
            "language": np.tile(np.array(LANGUAGES), len(live)),
            "effect": rng.normal(0.0, 0.05, len(live) * len(LANGUAGES)).astype(np.float32),
        }
    )
    minutes = {
        "minutes_by_language": {L: float(n) * FRAME_SECONDS / 60 for L, n in zip(LANGUAGES, lang_frames)},
        "minutes_by_category": {C: float(n) * FRAME_SECONDS / 60 for C, n in zip(CATEGORIES, cat_frames)},
    }
    run_info = {
        "model": "synthetic",
        "layer": 6,
        "site": "encoder layer 6",
        "n_features": n_features,
        "sae": {"architecture": "topk", "d_in": 512, "d_sae": n_features, "k": 32},
        "metrics": {"fvu": 0.1, "fvu_heldout": 0.12, "l0": 32.0, "dead_fraction": float(dead.mean())},
        "corpus": {
            "name": "synthetic",
            "n_clips": n_clips,
            "n_frames": total_frames,
            "minutes": total_frames * FRAME_SECONDS / 60,
            **minutes,
            "clips_by_category": {C: clip_cat.count(C) for C in CATEGORIES},
        },
        "languages": list(LANGUAGES),
        "categories": list(CATEGORIES),
        "effect_languages": list(LANGUAGES),
        "analysis": {
            "config": {"top_k": n_top, "window_frames": window_frames},
            "notes": ["synthetic atlas"],
        },
        "built_at": "1970-01-01T00:00:00+00:00",
    }
    run = pa.table({"key": list(run_info), "value": [json.dumps(v) for v in run_info.values()]})
    return write_atlas(
        path,
        {
            "run": run,
            "clips": clips,
            "clip_mels": clip_mels,
            "clip_words": clip_words,
            "features": features,
            "examples": examples,
            "feature_languages": languages,
            "feature_categories": categories,
            "feature_language_effects": effects,
            "density_histogram": density_histogram_table(density),
        },
    )


def _scatter(n: int, at: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.zeros(n, np.float32)
    out[at] = values
    return out


def _rows(matrix: np.ndarray, empty_rows: np.ndarray) -> pa.Array:
    """One list per row of `matrix`; rows flagged in `empty_rows` become empty lists."""
    lengths = np.where(empty_rows, 0, matrix.shape[1])
    return list_array(matrix[~empty_rows].ravel(), lengths)


def _examples(
    live: np.ndarray,
    max_act: np.ndarray,
    clip_frames: np.ndarray,
    n_top: int,
    n_quantile: int,
    window_frames: int,
    rng: np.random.Generator,
) -> pa.Table:
    """Top and quantile examples for the live features, sorted by (feature, kind, rank)."""
    per_feature = n_top + n_quantile
    n = len(live) * per_feature
    feature_id = np.repeat(live, per_feature).astype(np.int32)
    is_top = np.tile(np.arange(per_feature) < n_top, len(live))
    rank = np.tile(np.concatenate([np.arange(n_top), np.arange(n_quantile)]), len(live)).astype(np.int32)
    q_bin = 7 - np.minimum(rank * 8 // max(n_quantile, 1), 7)
    quantile = np.where(is_top, 1.0, (q_bin + 1) / 8.0).astype(np.float32)
    peak_act = np.where(
        is_top,
        max_act[feature_id] * (1.0 - 0.4 * rank / max(n_top, 1)),
        max_act[feature_id] * (q_bin + rng.random(n)) / 8.0,
    ).astype(np.float32)
    clip_id = rng.integers(0, len(clip_frames), n).astype(np.int32)
    frames = clip_frames[clip_id]
    peak = (rng.random(n) * frames).astype(np.int32)
    half = window_frames // 2
    start = np.maximum(0, peak - half).astype(np.int32)
    end = np.minimum(frames, peak + half + 1).astype(np.int32)
    lengths = end - start
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    position = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths) + np.repeat(start, lengths)
    distance = (position - np.repeat(peak, lengths)).astype(np.float32)
    width = np.repeat(rng.uniform(1.0, 8.0, n), lengths)
    acts = np.repeat(peak_act, lengths) * np.exp(-0.5 * (distance / width) ** 2)
    acts[acts < 0.05 * np.repeat(peak_act, lengths)] = 0.0
    return pa.table(
        {
            "feature_id": feature_id,
            "kind": np.where(is_top, "top", "quantile"),
            "rank": rank,
            "quantile": quantile,
            "clip_id": clip_id,
            "start_frame": start,
            "end_frame": end,
            "peak_frame": peak,
            "peak_act": peak_act,
            "acts": list_array(acts.astype(np.float32), lengths),
        }
    )
