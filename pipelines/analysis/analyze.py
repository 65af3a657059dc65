"""`analyze`: everything the atlas shows about each feature, computed from the activation shards and the SAE.

Steps (progress shown with rich):
1. one streaming pass that encodes every real frame once (`scan.scan_activations`): density, max/mean,
   log-grid histogram, language/category masses, top-k clip peaks, quantile reservoirs, co-occurrence;
2. the chosen examples' windows, re-encoded from only the clips that hold them (`scan.read_windows`);
3. decoder-cosine neighbours and Jaccard co-active partners;
4. per clip: uint8 log-mel and word-aligned text, window by window from the stored encoder states, with
   the language effects accumulated from a few windows per language of the SAE's training clips only (so
   steering's selection never saw the clips its tests score) (`clips`, `effects`);
5. per-frame annotations (`pipelines.annotate`: language, speaker, VAD, word, phone, position, loudness,
   pitch) and, on the SAE's held-out clips, each feature's best-detecting hypothesis as its label, typed,
   beside a random-SAE and a shuffled-annotation control (`interpret`); each feature's activation over the
   language versions of its top parallel sentences (`parallel`).
Frames are counted per language and per category of their clip (`groups`).
The result is saved under `data/runs/<run>/analysis/` for `build`.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipelines.activations import ActivationsMeta, read_meta
from pipelines.analysis.clips import BatchTranscribe, describe_clips, run_windows, window_rows
from pipelines.analysis.config import AnalysisConfig
from pipelines.analysis.effects import LanguageEffectEstimate
from pipelines.analysis.groups import corpus_groups
from pipelines.analysis.interpret import interpret
from pipelines.analysis.parallel import parallel_traces
from pipelines.analysis.result import (
    KIND_QUANTILE,
    KIND_TOP,
    AnalysisMeta,
    AnalysisResult,
    ClipTable,
    ClipText,
    ExampleTable,
    FeatureTable,
    Interpretation,
    load_clip_text,
)
from pipelines.analysis.scan import LatentEncoder, ScanResult, read_windows, scan_activations, window_bounds
from pipelines.analysis.streaming import decoder_neighbours, quantile_examples, rank_in_group
from pipelines.analysis.words import ExampleWords, top_example_words
from pipelines.annotate.annotate import annotate_run
from pipelines.annotate.frames import FrameAnnotations
from pipelines.corpus.manifest import SPEECH, Clip, read_manifest
from pipelines.errors import AtlasError, missing_stage
from pipelines.model.loader import WhisperBundle
from pipelines.model.transcribe import LANGUAGES
from pipelines.paths import RunPaths
from pipelines.sae.base import SparseAutoencoder
from pipelines.sae.split import Split, read_split


class AnalysisInputError(AtlasError):
    """The SAE, activations and corpus do not belong together."""


def analyze(
    run: RunPaths,
    corpus: Path,
    bundle: WhisperBundle,
    sae: LatentEncoder,
    cfg: AnalysisConfig,
    transcribe: BatchTranscribe | None = None,
) -> AnalysisResult:
    """Analyse every feature of `sae` over the run's activation shards and `corpus`; save and return it.

    `transcribe` runs the windows' transcription and alignment, the heaviest step (default: here, one batch
    after the other; `pipelines.engines.ray_transcribe` on a Ray actor pool)."""
    meta = read_meta(run.activations)
    if meta is None or not meta.shards:
        raise missing_stage("activations", run.activations, "extract")
    clips = _checked_clips(meta, sae, bundle, corpus)
    split = read_split(run.sae)
    languages, categories = corpus_groups(clips)
    with _progress() as progress, torch.no_grad():
        steps = _Steps(progress)
        with steps.timed("scan"):
            advance = steps.bar("encode every frame", meta.n_frames)
            scan = scan_activations(run.activations, sae, languages, categories, cfg, advance)
        with steps.timed("windows"):
            examples = _examples_with_windows(run, sae, scan, cfg, steps)
        with steps.timed("neighbours"):
            neighbours = decoder_neighbours(sae.W_dec, cfg.n_neighbours)
            coactive = scan.coactive.jaccard(scan.fire_count, cfg.n_neighbours)
        effects, notes = _language_effects(meta, bundle, sae, languages.names, cfg)
        with steps.timed("clips"):
            clip_table, clip_text = _describe_clips(
                run, meta, corpus, bundle, clips, split, scan, effects, cfg, steps, transcribe
            )
        with steps.timed("annotate"):
            advance = steps.bar("annotate frames", meta.n_frames)
            annotations = annotate_run(run, corpus, [t.words for t in clip_text], advance)
        with steps.timed("parallel"):
            parallel = parallel_traces(run.activations, sae, clips)
        with steps.timed("interpret"):
            interpretation, interpret_notes = _interpret(run, split, sae, annotations, scan)
            notes += interpret_notes

    words = _top_example_words(examples, clip_text, len(scan.fire_count))
    n_features = len(scan.fire_count)
    labels = interpretation.label if interpretation else [""] * n_features
    label_score = interpretation.label_score if interpretation else np.zeros(n_features, np.float32)
    result = AnalysisResult(
        meta=_meta(meta, bundle, cfg, scan, effects, notes, steps.timings),
        features=_feature_table(scan, neighbours, coactive, effects, label_score),
        examples=examples,
        clips=clip_table,
        clip_text=clip_text,
        labels=labels,
        top_words=words.words,
        interpretation=interpretation,
        annotations=annotations,
        parallel=parallel,
    )
    result.save(run.analysis)
    return result


def _checked_clips(
    meta: ActivationsMeta, sae: LatentEncoder, bundle: WhisperBundle, corpus: Path
) -> list[Clip]:
    """The corpus's clips, once the SAE, the model and the corpus are known to fit the activations."""
    d_in = sae.W_dec.shape[1]
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
    return clips


def _examples_with_windows(
    run: RunPaths, sae: LatentEncoder, scan: ScanResult, cfg: AnalysisConfig, steps: _Steps
) -> ExampleTable:
    """The chosen examples, with their windows re-encoded from only the clips that hold them."""
    examples = _choose_examples(scan, cfg)
    advance = steps.bar("example windows", len(np.unique(examples.clip)))
    examples.acts = read_windows(
        run.activations, sae, examples.feature, examples.clip, examples.start, examples.end, cfg, advance
    )
    return examples


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


def _language_effects(
    meta: ActivationsMeta,
    bundle: WhisperBundle,
    sae: LatentEncoder,
    languages: list[str],
    cfg: AnalysisConfig,
) -> tuple[LanguageEffectEstimate | None, list[str]]:
    """An empty estimate over the corpus's and the configured languages Whisper knows, or None and a note
    saying why: the SAE does not read the final encoder output, or no clips are asked for."""
    if meta.layer != bundle.n_layers:
        return None, [
            f"language effects skipped: the SAE reads layer {meta.layer}, not the final encoder output "
            f"(layer {bundle.n_layers}) that the language logits read"
        ]
    if cfg.effect_windows_per_language == 0:
        return None, ["language effects skipped: effect_windows_per_language is 0"]
    wanted = dict.fromkeys(languages + list(cfg.effect_languages))
    return LanguageEffectEstimate(bundle, sae, [lang for lang in wanted if lang in LANGUAGES]), []


def _describe_clips(
    run: RunPaths,
    meta: ActivationsMeta,
    corpus: Path,
    bundle: WhisperBundle,
    clips: list[Clip],
    split: Split | None,
    scan: ScanResult,
    effects: LanguageEffectEstimate | None,
    cfg: AnalysisConfig,
    steps: _Steps,
    transcribe: BatchTranscribe | None,
) -> tuple[ClipTable, list[ClipText]]:
    """Mels and transcripts of the extracted clips, window by window; a few windows of the SAE's training
    clips per language feed `effects`."""
    training = set(split.train) if split else None
    chosen = _effect_windows(clips, window_rows(meta), training, cfg.effect_windows_per_language)
    table, text = describe_clips(
        bundle,
        corpus,
        clips,
        run_windows(run.activations, meta),
        load_clip_text(run.analysis, bundle.name),
        cfg.max_new_tokens,
        effect_windows=chosen if effects else set(),
        on_hidden=lambda hidden, frames: effects.add(hidden, frames) if effects else None,
        advance=steps.bar("mels, transcripts, effects", int((scan.clip_frames > 0).sum())),
        aligner=cfg.aligner,
        transcribe_all=cfg.transcribe_all,
        transcribe=transcribe,
    )
    table.n_frames = scan.clip_frames
    return table, text


def _effect_windows(
    clips: list[Clip], windows: list[list[int]], training: set[int] | None, per_language: int
) -> set[tuple[int, ...]]:
    """Up to `per_language` windows of each language Whisper knows, in extraction order, whose clips are all
    speech of that language and all among the SAE's `training` clips (None: no split recorded, any)."""
    chosen: dict[str, list[tuple[int, ...]]] = {}
    for rows in windows:
        first = clips[rows[0]]
        if first.category != SPEECH or first.language not in LANGUAGES:
            continue
        if training is not None and not training.issuperset(rows):
            continue
        group = chosen.setdefault(first.language, [])
        if len(group) < per_language and tuple(rows) not in group:
            group.append(tuple(rows))
    return {key for group in chosen.values() for key in group}


def _interpret(
    run: RunPaths, split: Split | None, sae: LatentEncoder, annotations: FrameAnnotations, scan: ScanResult
) -> tuple[Interpretation | None, list[str]]:
    """The scored labels on the SAE's held-out clips (or None), and notes on what is missing."""
    if split is None or not split.evaluation:
        return None, ["labels skipped: the SAE's metrics.json records no held-out clips (train again)"]
    if not isinstance(sae, SparseAutoencoder):
        return None, ["labels skipped: the SAE is not one of the pipeline's architectures"]
    twin, notes = _stability_twin(run, sae)
    live_F = scan.fire_count > 0
    return interpret(run.activations, sae, annotations, set(split.evaluation), live_F, other_seed=twin), notes


def _stability_twin(run: RunPaths, sae: SparseAutoencoder) -> tuple[SparseAutoencoder | None, list[str]]:
    """The SAE trained with the next seed on the same split and settings, if `train` made one for this SAE."""
    from pipelines.sae.saelens import load_sae
    from pipelines.sae.train import METRICS_NAME

    if not (run.stability_sae / METRICS_NAME).exists():
        return None, ["seed stability not measured: run `whisper-atlas train --stability`"]
    mine = json.loads((run.sae / METRICS_NAME).read_text())
    twin = json.loads((run.stability_sae / METRICS_NAME).read_text())
    if any(mine.get(key) != twin.get(key) for key in ("split", "sae", "train_frames")):
        return None, [
            "seed stability not measured: the stability twin was trained for another SAE (train again)"
        ]
    return load_sae(run.stability_sae, device=sae.W_dec.device), []


def _top_example_words(examples: ExampleTable, clip_text: list[ClipText], n_features: int) -> ExampleWords:
    is_top = examples.kind == KIND_TOP
    clip_words = [t.words for t in clip_text]
    return top_example_words(
        examples.feature[is_top], examples.clip[is_top], examples.peak[is_top], clip_words, n_features
    )


def _feature_table(
    scan: ScanResult,
    neighbours: tuple[np.ndarray, np.ndarray],
    coactive: tuple[np.ndarray, np.ndarray],
    effects: LanguageEffectEstimate | None,
    label_score: np.ndarray,
) -> FeatureTable:
    n_features = len(scan.fire_count)
    return FeatureTable(
        fire_count=scan.fire_count,
        act_sum=scan.act_sum,
        max_act=scan.max_act,
        hist_counts=scan.hist_counts,
        lang_mass=scan.languages.mass_FK,
        lang_fires=scan.languages.fires_FK,
        cat_mass=scan.categories.mass_FK,
        cat_fires=scan.categories.fires_FK,
        neighbours=neighbours[0],
        neighbour_cos=neighbours[1],
        coactive=coactive[0],
        coactive_score=coactive[1],
        effects=effects.mean() if effects else np.zeros((n_features, 0), np.float32),
        label_score=label_score,
    )


def _meta(
    acts: ActivationsMeta,
    bundle: WhisperBundle,
    cfg: AnalysisConfig,
    scan: ScanResult,
    effects: LanguageEffectEstimate | None,
    notes: list[str],
    timings: dict[str, float],
) -> AnalysisMeta:
    return AnalysisMeta(
        model=acts.model,
        transcriber=bundle.name,
        layer=acts.layer,
        corpus=acts.corpus,
        n_frames=scan.n_frames,
        n_features=len(scan.fire_count),
        languages=scan.languages.names,
        lang_frames=scan.languages.frames_K.tolist(),
        categories=scan.categories.names,
        cat_frames=scan.categories.frames_K.tolist(),
        grid_edges=cfg.grid_edges().tolist(),
        effect_languages=effects.languages if effects else [],
        effect_clips=effects.n_clips if effects else 0,
        config=asdict(cfg),
        notes=notes,
        timings=timings,
    )


class _Steps:
    """The pass's named steps: the seconds each took, and a progress bar per step."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.timings: dict[str, float] = {}

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - start, 3)

    def bar(self, description: str, total: int) -> Callable[[int], None]:
        """A new progress bar; the returned function advances it."""
        task = self.progress.add_task(description, total=total)
        return lambda n: self.progress.advance(task, n)


@contextmanager
def _progress() -> Iterator[Progress]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns) as progress:
        yield progress
