"""What steering needs from a run besides the clip: the Whisper model, the SAE, the atlas data steering reads
(typical activations, language effects, labels) and the difference-of-means source.

The atlas is read through `pipelines.atlas.reader.AtlasReader`; a run without an atlas file steers with empty
atlas data (explicit features in `frame_norm` units, clip-gradient language selection, difference of means).
The difference-of-means baseline (as in contrastive activation addition, Rimsky et al. 2024) averages the
run's activation shards per language, once per run, cached next to the run.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from pipelines.errors import MissingStageError, missing_stage
from pipelines.paths import RunPaths
from pipelines.steering.presets import Preset, presets_from
from pipelines.steering.spec import SteeringError

if TYPE_CHECKING:  # the model stack loads with the model, not with this module
    import torch

    from pipelines.model.loader import WhisperBundle
    from pipelines.model.transcribe import Decoding
    from pipelines.sae import SparseAutoencoder

DOM_CACHE_NAME = "dom.npz"
CALIBRATION_NAME = "calibration.npz"
"""`whisper-atlas calibrate`'s gradients and selectivities (pipelines.steering.calibrate writes it)."""


@dataclass
class LanguageEffects:
    """Per-feature linear effect on each language token's logit (atlas `feature_language_effects`)."""

    languages: list[str]
    effect_FL: np.ndarray
    """(F, L) float32: d(logit of language l) per unit of feature f's typical activation."""

    def delta(self, source: str, target: str) -> np.ndarray:
        """(F,) effect on logit(target) - logit(source)."""
        for lang in (source, target):
            if lang not in self.languages:
                raise SteeringError(f"the atlas has no language effects for {lang!r}; use selection 'clip'")
        return (
            self.effect_FL[:, self.languages.index(target)] - self.effect_FL[:, self.languages.index(source)]
        )


@dataclass
class LanguageMeans:
    """Mean activation of each language's speech frames at the SAE's layer (difference-of-means baseline)."""

    languages: list[str]
    means_LD: np.ndarray
    """(L, D) float32 mean activation per language."""
    counts_L: np.ndarray
    """(L,) frames averaged per language."""
    fingerprint: str = ""

    def direction(self, source: str, target: str) -> np.ndarray:
        """(D,) mean(target) - mean(source)."""
        for lang in (source, target):
            if lang not in self.languages:
                have = ", ".join(self.languages) or "none"
                raise SteeringError(f"no {lang!r} speech frames in this run's activations (have: {have})")
        return self.means_LD[self.languages.index(target)] - self.means_LD[self.languages.index(source)]


MIN_NONSPEECH_SELECTIVITY = 2.0
"""A non-speech feature fires at least twice as much on non-speech frames as their share predicts."""


@dataclass
class Calibration:
    """What steering learned from the SAE's TRAINING clips only (`whisper-atlas calibrate`), so that no clip
    a test or figure scores chose the features: language gradients, selectivities, the silence gradient."""

    languages: list[str]
    """Corpus languages with training speech clips, the sources and targets below."""
    grad_LLD: np.ndarray
    """(source, language, D): mean over training clips of `source` of sum_t d log p(language) / d h_t."""
    selectivity_FL: np.ndarray
    """(F, L) language selectivity: share of the feature's activation on L's frames / L's share of frames."""
    nonspeech_selectivity_F: np.ndarray
    """(F,) the same for non-speech frames."""
    silence_grad_D: np.ndarray
    """(D,) mean over training non-speech clips of sum_t d log p(no-speech token) / d h_t."""
    nonspeech_share_threshold: float | None = None
    """A clip whose non-speech features (`nonspeech_features`) carry at least this share of its activation
    reads as non-speech (frames 'nonspeech_clip'): the 99th percentile over training speech clips. None in
    calibrations written before it existed."""

    def nonspeech_features(self) -> np.ndarray:
        """Ids of the features that fire on non-speech at least `MIN_NONSPEECH_SELECTIVITY` times as much as
        its share of training frames predicts."""
        return np.flatnonzero(self.nonspeech_selectivity_F >= MIN_NONSPEECH_SELECTIVITY)

    def nonspeech_share(self, sae: SparseAutoencoder, h_TD: torch.Tensor) -> float:
        """The share of a clip's SAE activation (over its real frames `h_TD`) its non-speech features carry;
        the clip reads as non-speech from `nonspeech_share_threshold` on."""
        import torch

        from pipelines.steering.directions import activation_share

        ids_K = torch.as_tensor(self.nonspeech_features(), device=h_TD.device)
        return activation_share(sae, h_TD, ids_K)

    def _index(self, *languages: str) -> list[int]:
        for lang in languages:
            if lang not in self.languages:
                have = ", ".join(self.languages) or "none"
                raise SteeringError(
                    f"no training clips in {lang!r} were calibrated (have: {have}); use selection 'clip'"
                )
        return [self.languages.index(lang) for lang in languages]

    def gradient(self, source: str, target: str) -> np.ndarray:
        """(D,) d(log p(target) - log p(source)) / dh, summed over frames, on training clips of `source`."""
        s, t = self._index(source, target)
        return self.grad_LLD[s, t] - self.grad_LLD[s, s]

    def selectivity(self, target: str) -> np.ndarray:
        """(F,) selectivity of each feature for `target`."""
        (t,) = self._index(target)
        return self.selectivity_FL[:, t]


@dataclass
class AtlasSteeringData:
    """The atlas tables steering reads: typical activations, language effects and feature types."""

    typical_act_F: np.ndarray | None = None
    """(F,) mean activation of each feature when it fires (atlas `features.mean_act`)."""
    effects: LanguageEffects | None = None
    label_types: dict[int, str] = field(default_factory=dict)
    """Feature id -> its type (`schema.LABEL_TYPES`), for typed features: what "why these features" shows."""


@dataclass
class SteeringResources:
    """Everything besides the clip that steering can draw on. Only `bundle` and `sae` are required."""

    bundle: WhisperBundle
    sae: SparseAutoencoder
    layer: int | None = None
    """Encoder layer the SAE reads (None = final output, the default site)."""
    atlas: AtlasSteeringData = field(default_factory=AtlasSteeringData)
    dom: Callable[[], LanguageMeans] | None = None
    """Lazily computes/loads the language means (scans the shards once); None when the run has none."""
    labels: dict[int, str] = field(default_factory=dict)
    calibration: Calibration | None = None
    """Training-clip gradients and selectivities (None before `whisper-atlas calibrate`)."""
    presets: dict[str, Preset] = field(default_factory=dict)
    """The atlas's steering presets by id ({} before `whisper-atlas calibrate` and `build`)."""
    decoding: Decoding | None = None
    """How transcripts are decoded; None: Whisper's rules (`WHISPER_DECODING`, temperature fallback)."""


def read_atlas_steering_data(atlas: Path, d_sae: int) -> AtlasSteeringData:
    """Typical activations and language effects from an atlas file (empty without one); ids outside
    0..d_sae-1 (an atlas of another SAE) are ignored."""
    from pipelines.atlas.reader import AtlasReader

    if not atlas.exists():
        return AtlasSteeringData()
    with AtlasReader.open(atlas) as reader:
        typical_F = reader.typical_activations(d_sae)
        effects = reader.language_effects(d_sae)
        types = {f: t for f, t in reader.feature_types().items() if f < d_sae}
    return AtlasSteeringData(typical_F, None if effects is None else LanguageEffects(*effects), types)


def read_labels_and_presets(atlas: Path) -> tuple[dict[int, str], dict[str, Preset]]:
    """Feature id -> label for labelled features, and the steering presets ({} and {} without an atlas)."""
    from pipelines.atlas.reader import AtlasReader

    if not atlas.exists():
        return {}, {}
    with AtlasReader.open(atlas) as reader:
        return reader.feature_labels(), presets_from(reader.run_metadata().get("steering"))


def heldout_clip_rows(sae_folder: Path) -> set[int]:
    """Manifest rows of the clips the SAE was not trained on (metrics.json `heldout_clip_rows`)."""
    path = sae_folder / "metrics.json"
    if not path.exists():
        return set()
    return {int(r) for r in json.loads(path.read_text()).get("heldout_clip_rows", [])}


def language_means(
    activations: Path, corpus: Path, exclude_rows: set[int], cache: Path | None = None
) -> LanguageMeans:
    """Mean activation per language over the speech frames of the run's shards, skipping the manifest rows
    `exclude_rows` (the SAE's held-out clips, so both steering methods see the same data).

    Cached in `cache` (an .npz) keyed by the shards' fingerprint and the excluded rows: one scan per run.
    """
    from pipelines.activations import iter_shards, read_meta
    from pipelines.corpus.manifest import SPEECH, read_manifest
    from pipelines.stages import fingerprint

    meta = read_meta(activations)
    if meta is None:
        raise missing_stage("activations", activations, "extract")
    fp = fingerprint(
        shards=meta.fingerprint or [s.name for s in meta.shards],
        n=meta.n_frames,
        exclude=sorted(exclude_rows),
    )
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            if str(z["fingerprint"]) == fp:
                return LanguageMeans(list(z["languages"]), z["means_LD"], z["counts_L"], fp)
    clips = read_manifest(corpus)
    row_language = np.array(
        [
            c.language if c.category == SPEECH and c.language and row not in exclude_rows else ""
            for row, c in enumerate(clips)
        ]
    )
    languages = sorted(set(row_language) - {""})
    sums_LD = np.zeros((len(languages), meta.d_model), np.float64)
    counts_L = np.zeros(len(languages), np.int64)
    for acts_ND, index_N2 in iter_shards(activations):
        lang_N = row_language[index_N2[:, 0]]
        for i, lang in enumerate(languages):
            mask = lang_N == lang
            if mask.any():
                sums_LD[i] += np.asarray(acts_ND[mask], np.float64).sum(0)
                counts_L[i] += int(mask.sum())
    keep = counts_L > 0
    means = LanguageMeans(
        [lang for lang, k in zip(languages, keep) if k],
        (sums_LD[keep] / counts_L[keep, None]).astype(np.float32),
        counts_L[keep],
        fp,
    )
    if cache is not None:
        _save_means(cache, means)
    return means


def _save_npz(path: Path, **arrays: Any) -> None:
    """Write `arrays` to `path` atomically: beside it first, then renamed into place (`pipelines.durable`)."""
    from pipelines import durable

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = durable.sibling(path, "tmp")
    with tmp.open("wb") as out:
        np.savez(out, **arrays)
    durable.replace(tmp, path)


def _save_means(cache: Path, means: LanguageMeans) -> None:
    _save_npz(
        cache,
        languages=np.array(means.languages),
        means_LD=means.means_LD,
        counts_L=means.counts_L,
        fingerprint=np.array(means.fingerprint),
    )


def save_calibration(path: Path, cal: Calibration) -> None:
    _save_npz(
        path,
        languages=np.array(cal.languages),
        grad_LLD=cal.grad_LLD,
        selectivity_FL=cal.selectivity_FL,
        nonspeech_selectivity_F=cal.nonspeech_selectivity_F,
        silence_grad_D=cal.silence_grad_D,
        nonspeech_share_threshold=np.array(
            np.nan if cal.nonspeech_share_threshold is None else cal.nonspeech_share_threshold
        ),
    )


def load_calibration(path: Path, d_sae: int) -> Calibration | None:
    """The calibration at `path`, or None when there is none or it belongs to an SAE of another width."""
    if not path.exists():
        return None
    with np.load(path) as z:
        cal = Calibration(
            [str(x) for x in z["languages"]],
            z["grad_LLD"],
            z["selectivity_FL"],
            z["nonspeech_selectivity_F"],
            z["silence_grad_D"],
            _optional_float(z, "nonspeech_share_threshold"),
        )
    return cal if cal.selectivity_FL.shape[0] == d_sae else None


def _optional_float(z: Any, name: str) -> float | None:
    """A scalar saved as NaN when absent, or a key older files lack: None either way."""
    if name not in z.files or np.isnan(z[name]):
        return None
    return float(z[name])


def run_model_and_layer(run: RunPaths) -> tuple[str | None, int | None]:
    """The Whisper spec and encoder layer a run's SAE was trained on (activations meta, else the atlas)."""
    from pipelines.activations import read_meta
    from pipelines.atlas.reader import AtlasReader

    meta = read_meta(run.activations)
    if meta is not None:
        return meta.model, meta.layer
    if run.atlas.exists():
        with AtlasReader.open(run.atlas) as reader:
            values = reader.run_metadata()
        layer = values.get("layer")
        return values.get("model"), None if layer is None else int(layer)
    return None, None


def load_steering_resources(
    run: RunPaths, model: str | None = None, device: str | None = None
) -> SteeringResources:
    """Load the run's Whisper model (or `model`), SAE, atlas tables and difference-of-means source."""
    from pipelines.model.loader import load_whisper
    from pipelines.paths import corpus_dir
    from pipelines.sae import load_sae

    if not (run.sae / "cfg.json").exists():
        raise MissingStageError(
            f"no SAE in {run.sae}: run `whisper-atlas train` (or `whisper-atlas demo`) first"
        )
    run_model, layer = run_model_and_layer(run)
    bundle = load_whisper(model or run_model or "bundled:whisper-base", device=device)
    sae = load_sae(run.sae, device=bundle.device).eval()
    for p in sae.parameters():
        p.requires_grad_(False)
    atlas = read_atlas_steering_data(run.atlas, sae.d_sae)
    labels, presets = read_labels_and_presets(run.atlas)
    dom = None
    meta_path = run.activations / "meta.json"
    if meta_path.exists():  # the means are computed on first use (one scan of the shards), then cached
        corpus = corpus_dir(json.loads(meta_path.read_text())["corpus"])
        cache = run.root / "steering" / DOM_CACHE_NAME
        dom = functools.cache(
            functools.partial(language_means, run.activations, corpus, heldout_clip_rows(run.sae), cache)
        )
    calibration = load_calibration(run.root / "steering" / CALIBRATION_NAME, sae.d_sae)
    return SteeringResources(bundle, sae, layer, atlas, dom, labels, calibration, presets)
