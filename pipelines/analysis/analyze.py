"""`analyze`: everything the atlas shows about each feature, computed from the activation shards and the SAE.

Steps (progress shown with rich):
1. one streaming pass that encodes every real frame once (`scan.scan_activations`): density, max/mean,
   log-grid histogram, language/category masses, top-k clip peaks, quantile reservoirs, co-occurrence;
2. the chosen examples' windows, re-encoded from only the clips that hold them (`scan.read_windows`);
3. decoder-cosine neighbours and Jaccard co-active partners;
4. per clip: uint8 log-mel and Whisper's word-aligned transcript, with the language effects accumulated
   from the final encoder states of a dozen speech clips per language (`clips`, `effects`);
5. automatic labels (`labels`).
The result is saved under `data/runs/<run>/analysis/` for `build`.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipelines.activations import read_meta
from pipelines.analysis.clips import describe_clips
from pipelines.analysis.config import AnalysisConfig
from pipelines.analysis.effects import LanguageEffects
from pipelines.analysis.labels import auto_labels, top_example_words
from pipelines.analysis.result import (
    KIND_QUANTILE,
    KIND_TOP,
    AnalysisMeta,
    AnalysisResult,
    ExampleTable,
    FeatureTable,
    load_clip_text,
)
from pipelines.analysis.scan import LatentEncoder, ScanResult, read_windows, scan_activations, window_bounds
from pipelines.analysis.streaming import decoder_neighbours, quantile_examples, rank_in_group
from pipelines.corpus.manifest import CATEGORIES, SPEECH, Clip, read_manifest
from pipelines.errors import AtlasError, MissingStageError
from pipelines.model.loader import WhisperBundle
from pipelines.model.transcribe import LANGUAGES
from pipelines.paths import RunPaths


class AnalysisInputError(AtlasError):
    """The SAE, activations and corpus do not belong together."""


def analyze(
    run: RunPaths, corpus: Path, bundle: WhisperBundle, sae: LatentEncoder, cfg: AnalysisConfig
) -> AnalysisResult:
    """Analyse every feature of `sae` over the run's activation shards and `corpus`; save and return it."""
    meta = read_meta(run.activations)
    if meta is None or not meta.shards:
        raise MissingStageError(f"no activations in {run.activations}: run `whisper-atlas extract` first")
    n_features, d_in = sae.W_dec.shape
    if d_in != meta.d_model:
        raise AnalysisInputError(
            f"the SAE reads {d_in}-wide activations but the shards hold {meta.d_model}: retrain it on them"
        )
    if bundle.d_model != meta.d_model:
        raise AnalysisInputError(
            f"{bundle.name} is {bundle.d_model} wide but the activations came from {meta.model} "
            f"({meta.d_model}): analyse with --model {meta.model}"
        )
    clips = read_manifest(corpus)
    if max(meta.done_clip_rows) >= len(clips):
        raise AnalysisInputError(
            f"the activations reference clip rows beyond the {len(clips)} clips of {corpus}: re-run extract"
        )
    languages = sorted({c.language for c in clips if c.category == SPEECH and c.language})
    categories = list(CATEGORIES) + sorted({c.category for c in clips} - set(CATEGORIES))
    clip_language = np.array(
        [languages.index(c.language) if c.category == SPEECH and c.language else -1 for c in clips]
    )
    clip_category = np.array([categories.index(c.category) for c in clips])
    timings: dict[str, float] = {}
    notes: list[str] = []

    with _progress() as progress, torch.no_grad():
        with _timed(timings, "scan"):
            task = progress.add_task("encode every frame", total=meta.n_frames)
            scan = scan_activations(
                run.activations,
                sae,
                clip_language,
                len(languages),
                clip_category,
                len(categories),
                cfg,
                advance=lambda n: progress.advance(task, n),
            )
        with _timed(timings, "windows"):
            examples = _choose_examples(scan, cfg)
            task = progress.add_task("example windows", total=len(np.unique(examples.clip)))
            examples.acts = read_windows(
                run.activations,
                sae,
                examples.feature,
                examples.clip,
                examples.start,
                examples.end,
                cfg,
                advance=lambda n: progress.advance(task, n),
            )

        with _timed(timings, "neighbours"):
            neighbours, neighbour_cos = decoder_neighbours(sae.W_dec, cfg.n_neighbours)
            coactive, coactive_score = scan.coactive.jaccard(scan.fire_count, cfg.n_neighbours)

        rows = [int(r) for r in np.flatnonzero(scan.clip_frames)]
        effect_languages = [
            lang for lang in dict.fromkeys(languages + list(cfg.effect_languages)) if lang in LANGUAGES
        ]
        effects: LanguageEffects | None = None
        effect_rows: set[int] = set()
        if meta.layer != bundle.n_layers:
            notes.append(
                f"language effects skipped: the SAE reads layer {meta.layer}, not the final encoder output "
                f"(layer {bundle.n_layers}) that the language logits read"
            )
        elif cfg.effect_clips_per_language == 0:
            notes.append("language effects skipped: effect_clips_per_language is 0")
        else:
            effects = LanguageEffects(bundle, sae, effect_languages)
            effect_rows = _effect_rows(clips, rows, cfg.effect_clips_per_language)

        with _timed(timings, "clips"):
            task = progress.add_task("mels, transcripts, effects", total=len(rows))
            clip_table, clip_text = describe_clips(
                bundle,
                corpus,
                clips,
                rows,
                load_clip_text(run.analysis, bundle.name),
                effect_rows,
                lambda _rows, hidden, frames: effects.add(hidden, frames) if effects else None,
                cfg.max_new_tokens,
                advance=lambda n: progress.advance(task, n),
            )
            clip_table.n_frames = scan.clip_frames

    is_top = examples.kind == KIND_TOP
    top_words, word_support = top_example_words(
        examples.feature[is_top],
        examples.clip[is_top],
        examples.peak[is_top],
        [t.words for t in clip_text],
        n_features,
    )
    labels, label_score = auto_labels(
        scan.fire_count,
        scan.cat_mass,
        scan.cat_fires,
        scan.cat_frames,
        categories,
        scan.lang_mass,
        scan.lang_fires,
        scan.lang_frames,
        languages,
        top_words,
        word_support,
    )
    features = FeatureTable(
        fire_count=scan.fire_count,
        act_sum=scan.act_sum,
        max_act=scan.max_act,
        hist_counts=scan.hist_counts,
        lang_mass=scan.lang_mass,
        lang_fires=scan.lang_fires,
        cat_mass=scan.cat_mass,
        cat_fires=scan.cat_fires,
        neighbours=neighbours,
        neighbour_cos=neighbour_cos,
        coactive=coactive,
        coactive_score=coactive_score,
        effects=effects.mean() if effects else np.zeros((n_features, 0), np.float32),
        label_score=label_score,
    )
    result = AnalysisResult(
        meta=AnalysisMeta(
            model=meta.model,
            transcriber=bundle.name,
            layer=meta.layer,
            corpus=meta.corpus,
            n_frames=scan.n_frames,
            n_features=n_features,
            languages=languages,
            lang_frames=scan.lang_frames.tolist(),
            categories=categories,
            cat_frames=scan.cat_frames.tolist(),
            grid_edges=cfg.grid_edges().tolist(),
            effect_languages=effect_languages if effects else [],
            effect_clips=effects.n_clips if effects else 0,
            config=asdict(cfg),
            notes=notes,
            timings=timings,
        ),
        features=features,
        examples=examples,
        clips=clip_table,
        clip_text=clip_text,
        labels=labels,
        top_words=top_words,
    )
    result.save(run.analysis)
    return result


def _choose_examples(scan: ScanResult, cfg: AnalysisConfig) -> ExampleTable:
    """Top and quantile examples with window bounds (acts filled in later), sorted (feature, kind, rank)."""
    top = scan.top
    value = top.value_FK.numpy()
    f_top, r_top = np.nonzero(value > 0)
    top_clip = top.clip_FK.numpy()[f_top, r_top]
    draws = quantile_examples(
        scan.reservoir,
        cfg.grid_edges(),
        cfg.quantile_bins,
        cfg.quantile_per_bin,
        cfg.seed,
        exclude=(f_top, top_clip),
    )
    feature = np.concatenate([f_top, draws.feature]).astype(np.int32)
    kind = np.concatenate([np.full(len(f_top), KIND_TOP), np.full(len(draws.feature), KIND_QUANTILE)]).astype(
        np.int8
    )
    rank = np.concatenate([r_top, rank_in_group(draws.feature)]).astype(np.int32)
    max_act = np.maximum(scan.max_act, 1e-30)
    quantile = np.concatenate([np.ones(len(f_top)), np.minimum(draws.upper / max_act[draws.feature], 1.0)])
    clip = np.concatenate([top_clip, draws.clip]).astype(np.int32)
    peak = np.concatenate([top.frame_FK.numpy()[f_top, r_top], draws.frame]).astype(np.int32)
    peak_act = np.concatenate([value[f_top, r_top], draws.value]).astype(np.float32)
    order = np.lexsort((rank, kind, feature))
    start, end = window_bounds(peak[order], scan.clip_frames[clip[order]], cfg.window_frames)
    return ExampleTable(
        feature=feature[order],
        kind=kind[order],
        rank=rank[order],
        quantile=quantile[order].astype(np.float32),
        clip=clip[order],
        start=start.astype(np.int32),
        end=end.astype(np.int32),
        peak=peak[order],
        peak_act=peak_act[order],
        acts=np.zeros(0, np.float32),
        acts_len=(end - start).astype(np.int32),
    )


def _effect_rows(clips: list[Clip], rows: list[int], per_language: int) -> set[int]:
    """The first `per_language` extracted speech clips of each language Whisper knows, in manifest order."""
    chosen: dict[str, list[int]] = {}
    for r in rows:
        clip = clips[r]
        if clip.category == SPEECH and clip.language in LANGUAGES:
            group = chosen.setdefault(clip.language, [])
            if len(group) < per_language:
                group.append(r)
    return {r for group in chosen.values() for r in group}


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 3)


@contextmanager
def _progress() -> Iterator[Progress]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns) as progress:
        yield progress
