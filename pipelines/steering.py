"""Steer Whisper's transcription by editing its encoder output: SAE features, or a difference of means.

Methods (all act on the REAL frames of a clip only; the 30 s window's padding is left alone):

- add (activation addition with SAE decoder directions, as Neuronpedia's steering and Templeton et al.,
  "Scaling Monosemanticity", 2024): h' = h + c_f * W_dec[f] for each chosen feature f.
- clamp (the SAE's latent set to a value, FREUD-style): z = sae.encode(h), z'_f = v,
  h' = sae.decode(z') + (h - sae.decode(z)). The error term h - sae(h) is kept, so a clamp that changes no
  latent returns h exactly; we compute it as h + (decode(z') - decode(z)), the same sum in an order whose
  difference is exactly zero when z' = z.
- toward a language, method `sae`: the N features whose effect on logit(target) - logit(source) is largest
  (from the atlas's `feature_language_effects`, or this clip's gradient of `language_logits`), added along
  their effect-weighted decoder directions.
- toward a language, method `dom` (the difference-of-means baseline of earlier Whisper steering work and of
  contrastive activation addition, Rimsky et al. 2024): direction = mean activation of target-language frames
  - mean of source-language frames, from the run's activation shards.

Units of strength (`scale`):
- `frame_norm` (default): strength 1 adds a vector as long as this clip's mean frame norm (feature
  directions are unit-normalised first). Measured flips (facts/steering-feasibility.md): ~0.48 for 10 SAE
  features ranked by effect, ~0.36 for the difference of means.
- `feature_act`: strength 1 adds the feature's typical activation (atlas `features.mean_act`) times its
  decoder row, i.e. one ordinary firing of the feature.
In clamp mode the clamped latent value is strength x the same unit (strength 0 = ablate the feature).

The encoder runs ONCE per request; baseline, SAE-reconstructed and steered states are decoded in ONE batched
`transcribe_encoded` call.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

import numpy as np
import torch

from pipelines.errors import AtlasError, MissingStageError
from pipelines.paths import RunPaths

if TYPE_CHECKING:  # the model stack loads with the model, not with this module
    from pipelines.model.loader import WhisperBundle
    from pipelines.model.transcribe import Transcription
    from pipelines.sae import SparseAutoencoder

Mode = Literal["add", "clamp"]
Method = Literal["sae", "dom"]
Scale = Literal["frame_norm", "feature_act"]
Selection = Literal["auto", "atlas", "clip"]

MAX_ABS_STRENGTH = 20.0
"""Beyond this the decoder only loops or goes silent; larger values are a typo, not an experiment."""

MAX_NEW_TOKENS = 128
"""Hard cap on decoded tokens: a steered decoder can loop to Whisper's 448-token limit (tens of seconds)."""

DOM_CACHE_NAME = "dom.npz"


class SteeringError(AtlasError):
    """A steering request that cannot be carried out (bad spec, missing atlas data, unknown feature)."""


@dataclass
class FeatureStrength:
    """One feature to steer with."""

    id: int
    """SAE latent index."""
    strength: float
    """Multiple of the `scale` unit; negative pushes against the feature."""


@dataclass
class SteeringSpec:
    """What to steer: explicit features, or a target language (then `method` picks the direction)."""

    features: list[FeatureStrength] = field(default_factory=list)
    """Explicit features and strengths (method `sae` only)."""
    mode: Mode = "add"
    """`add` the decoder direction, or `clamp` the latent to strength x unit (SAE error term kept)."""
    toward_language: str | None = None
    """Target language code (e.g. `es`): steer from the clip's language toward it."""
    source_language: str | None = None
    """Language to steer away from; default: the language Whisper detects in the clip."""
    method: Method = "sae"
    """`sae` (features ranked by language effect) or `dom` (difference of means) for `toward_language`."""
    scale: Scale = "frame_norm"
    """Unit of strength: the clip's mean frame norm, or the feature's typical activation (see module doc)."""
    strength: float = 0.5
    """Strength of the language direction (`toward_language`), in units of the clip's mean frame norm."""
    n_features: int = 10
    """How many features `toward_language` with method `sae` adds."""
    selection: Selection = "auto"
    """Where language effects come from: the atlas table, this clip's gradients, or `auto` (atlas if any)."""
    max_new_tokens: int = 64
    """Decoder budget per transcript (capped at MAX_NEW_TOKENS)."""

    def __post_init__(self) -> None:
        self.features = [f if isinstance(f, FeatureStrength) else FeatureStrength(**f) for f in self.features]
        if self.mode not in ("add", "clamp"):
            raise SteeringError(f"mode must be 'add' or 'clamp', got {self.mode!r}")
        if self.method not in ("sae", "dom"):
            raise SteeringError(f"method must be 'sae' or 'dom', got {self.method!r}")
        if self.scale not in ("frame_norm", "feature_act"):
            raise SteeringError(f"scale must be 'frame_norm' or 'feature_act', got {self.scale!r}")
        if self.selection not in ("auto", "atlas", "clip"):
            raise SteeringError(f"selection must be 'auto', 'atlas' or 'clip', got {self.selection!r}")
        if not self.features and not self.toward_language:
            raise SteeringError("nothing to steer: give at least one feature or a target language")
        if self.features and self.toward_language:
            raise SteeringError("give either features or a target language, not both")
        if self.method == "dom" and not self.toward_language:
            raise SteeringError("method 'dom' needs a target language (toward_language)")
        if self.toward_language and self.mode != "add":
            raise SteeringError("toward_language adds a direction: use mode 'add'")
        for f in self.features:
            _check_strength(f.strength, f"feature {f.id}")
            if isinstance(f.id, bool) or not isinstance(f.id, int) or f.id < 0:
                raise SteeringError(f"feature ids are non-negative integers, got {f.id!r}")
        if len({f.id for f in self.features}) != len(self.features):
            raise SteeringError("each feature may appear once")
        _check_strength(self.strength, "strength")
        for name in ("n_features", "max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise SteeringError(f"{name} must be an integer, got {value!r}")
        for name in ("toward_language", "source_language"):
            if not isinstance(getattr(self, name), (str, type(None))):
                raise SteeringError(f"{name} must be a language code like 'es', got {getattr(self, name)!r}")
        if not 1 <= self.n_features <= 256:
            raise SteeringError(f"n_features must be in 1..256, got {self.n_features}")
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise SteeringError(f"max_new_tokens must be in 1..{MAX_NEW_TOKENS}, got {self.max_new_tokens}")

    @classmethod
    def from_json(cls, text: str) -> "SteeringSpec":
        """Parse the API's `spec` form field; unknown keys and bad JSON raise SteeringError."""
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, TypeError) as exc:
            raise SteeringError(f"spec is not valid JSON ({exc})") from exc
        if not isinstance(raw, dict):
            raise SteeringError("spec must be a JSON object")
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise SteeringError(f"unknown spec keys: {sorted(unknown)}")
        if not isinstance(raw.get("features", []), list) or not all(
            isinstance(f, dict) and set(f) == {"id", "strength"} for f in raw.get("features", [])
        ):
            raise SteeringError('spec.features must be a list of {"id": int, "strength": float}')
        try:
            return cls(**{k: v for k, v in raw.items() if v is not None})
        except (TypeError, ValueError) as exc:
            raise SteeringError(f"bad spec: {exc}") from exc


def _check_strength(value: float, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SteeringError(f"{what}: strength must be a finite number, got {value!r}")
    if abs(value) > MAX_ABS_STRENGTH:
        raise SteeringError(f"{what}: |strength| must be <= {MAX_ABS_STRENGTH}, got {value}")


# ---------------------------------------------------------------------------------------------------------
# Steering resources: what a steerer needs besides the model and the SAE (all optional).


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


@dataclass
class AtlasSteeringData:
    """The atlas tables steering reads: typical activations and language effects."""

    typical_act_F: np.ndarray | None = None
    """(F,) mean activation of each feature when it fires (atlas `features.mean_act`)."""
    effects: LanguageEffects | None = None


def read_atlas_steering_data(atlas: Path, d_sae: int) -> AtlasSteeringData:
    """Read `features.mean_act` and `feature_language_effects` from an atlas file (read-only); ids outside
    0..d_sae-1 (an atlas of another SAE) are ignored."""
    import duckdb

    if not atlas.exists():
        return AtlasSteeringData()
    con = duckdb.connect(str(atlas), read_only=True)
    try:
        acts = con.execute(f"SELECT id, mean_act FROM features WHERE id < {int(d_sae)}").fetchnumpy()
        effects = con.execute(
            "SELECT feature_id, language, effect FROM feature_language_effects"
            f" WHERE feature_id < {int(d_sae)}"
        ).fetchnumpy()
    finally:
        con.close()
    typical_F = None
    if len(acts["id"]):
        typical_F = np.zeros(d_sae, np.float32)
        typical_F[acts["id"]] = acts["mean_act"]
    if not len(effects["feature_id"]):
        return AtlasSteeringData(typical_F, None)
    languages = sorted(set(effects["language"].tolist()))
    effect_FL = np.zeros((d_sae, len(languages)), np.float32)
    effect_FL[effects["feature_id"], np.searchsorted(languages, effects["language"])] = effects["effect"]
    return AtlasSteeringData(typical_F, LanguageEffects(languages, effect_FL))


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
        raise MissingStageError(f"no activations in {activations}: run `whisper-atlas extract` first")
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
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp.npz")
        np.savez(
            tmp,
            languages=np.array(means.languages),
            means_LD=means.means_LD,
            counts_L=means.counts_L,
            fingerprint=np.array(fp),
        )
        tmp.replace(cache)
    return means


# ---------------------------------------------------------------------------------------------------------
# The maths on one clip's real frames h_TD (T real frames, D model width).


def mean_frame_norm(h_TD: torch.Tensor) -> float:
    return float(h_TD.norm(dim=-1).mean())


def reconstruct(sae: SparseAutoencoder, h_TD: torch.Tensor) -> torch.Tensor:
    """The SAE's reconstruction sae.decode(sae.encode(h)) (no error term)."""
    return sae.decode(sae.encode(h_TD))


def add_directions(h_TD: torch.Tensor, directions_KD: torch.Tensor, coefs_K: torch.Tensor) -> torch.Tensor:
    """h + sum_k coef_k * direction_k on every frame; zero coefficients return h bit for bit."""
    return h_TD + (coefs_K.to(h_TD.dtype) @ directions_KD.to(h_TD.dtype))[None, :]


def clamp_latents(
    sae: SparseAutoencoder, h_TD: torch.Tensor, ids_K: torch.Tensor, values_K: torch.Tensor
) -> torch.Tensor:
    """Set latents `ids` to `values` on every frame, keeping the SAE's error term.

    h' = decode(z') + (h - decode(z)), computed as h + (decode(z') - decode(z)): z' == z gives h exactly.
    """
    z_TF = sae.encode(h_TD)
    z2_TF = z_TF.clone()
    z2_TF[:, ids_K] = values_K.to(z_TF.dtype)[None, :]
    return h_TD + (sae.decode(z2_TF) - sae.decode(z_TF))


def unit_rows(W_KD: torch.Tensor) -> torch.Tensor:
    return W_KD / W_KD.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def feature_units(
    sae: SparseAutoencoder,
    ids_K: torch.Tensor,
    scale: Scale,
    frame_norm: float,
    typical_act_F: np.ndarray | None,
) -> torch.Tensor:
    """Latent value that strength 1 stands for, per feature (adds strength x unit x W_dec[f])."""
    if scale == "frame_norm":
        return frame_norm / sae.W_dec[ids_K].norm(dim=-1).clamp_min(1e-12)
    if typical_act_F is None:
        raise SteeringError(
            "scale 'feature_act' needs the atlas's typical activations: build the atlas or use 'frame_norm'"
        )
    return torch.as_tensor(typical_act_F, dtype=sae.W_dec.dtype, device=sae.W_dec.device)[ids_K]


def language_gradient(
    bundle: WhisperBundle, final_BTD: torch.Tensor, n_frames: int, target: str, source: str | None = None
) -> tuple[str, torch.Tensor]:
    """One differentiable language-ID step on the clip: the source language (the detected one unless
    given) and g = sum over real frames t of d(logit(target) - logit(source)) / d h_t, shape (D,).

    unit(W_dec[f]) . g is the first-order change of that logit difference when feature f's unit decoder
    direction is added to every real frame: its per-clip language effect."""
    from pipelines.model.transcribe import LANGUAGES, language_logits

    h = final_BTD[:1].detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits_99 = language_logits(bundle, h)[0]
        if source is None:
            source = LANGUAGES[int(logits_99.argmax())]
        diff = logits_99[LANGUAGES.index(target)] - logits_99[LANGUAGES.index(source)]
        (grad_BTD,) = torch.autograd.grad(diff, h)
    return source, grad_BTD[0, :n_frames].sum(0)


@dataclass
class UsedFeature:
    """A feature (or direction) actually applied, for the response and the UI."""

    id: int | None
    """SAE latent, or None for a non-SAE direction (difference of means)."""
    strength: float
    """In the spec's unit (see `scale`)."""
    label: str = ""
    effect: float | None = None
    """Its score on logit(target) - logit(source), when chosen by language effect."""


@dataclass
class SteeringPlan:
    """A resolved spec: a function editing real frames, and what it uses."""

    edit: Callable[[torch.Tensor], torch.Tensor]
    features_used: list[UsedFeature]
    source_language: str | None = None
    target_language: str | None = None
    selection: str | None = None


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


def run_model_and_layer(run: RunPaths) -> tuple[str | None, int | None]:
    """The Whisper spec and encoder layer a run's SAE was trained on (activations meta, else the atlas)."""
    from pipelines.activations import read_meta

    meta = read_meta(run.activations)
    if meta is not None:
        return meta.model, meta.layer
    if run.atlas.exists():
        import duckdb

        con = duckdb.connect(str(run.atlas), read_only=True)
        try:
            rows = dict(con.execute("SELECT key, value FROM run WHERE key IN ('model', 'layer')").fetchall())
        finally:
            con.close()
        model, layer = (json.loads(rows[k]) if k in rows else None for k in ("model", "layer"))
        return model, None if layer is None else int(layer)
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
    labels = read_feature_labels(run.atlas)
    dom = None
    meta_path = run.activations / "meta.json"
    if meta_path.exists():  # the means are computed on first use (one scan of the shards), then cached
        corpus = corpus_dir(json.loads(meta_path.read_text())["corpus"])
        cache = run.root / "steering" / DOM_CACHE_NAME
        dom = functools.cache(
            functools.partial(language_means, run.activations, corpus, heldout_clip_rows(run.sae), cache)
        )
    return SteeringResources(bundle, sae, layer, atlas, dom, labels)


def read_feature_labels(atlas: Path) -> dict[int, str]:
    """Feature id -> label for labelled features ({} without an atlas)."""
    if not atlas.exists():
        return {}
    import duckdb

    con = duckdb.connect(str(atlas), read_only=True)
    try:
        return dict(con.execute("SELECT id, label FROM features WHERE label <> ''").fetchall())
    finally:
        con.close()


def plan_steering(
    res: SteeringResources, spec: SteeringSpec, h_TD: torch.Tensor, final_BTD: torch.Tensor, n_frames: int
) -> SteeringPlan:
    """Resolve `spec` against this clip: `h_TD` its real frames at the SAE layer, `final_BTD` the final
    encoder output (for the detected language and clip gradients)."""
    sae = res.sae
    frame_norm = mean_frame_norm(h_TD)
    if spec.features:
        ids = [f.id for f in spec.features]
        bad = [i for i in ids if i >= sae.d_sae]
        if bad:
            raise SteeringError(f"unknown feature ids {bad}: this SAE has features 0..{sae.d_sae - 1}")
        ids_K = torch.tensor(ids, device=h_TD.device)
        strengths_K = torch.tensor([f.strength for f in spec.features], dtype=h_TD.dtype, device=h_TD.device)
        values_K = strengths_K * feature_units(sae, ids_K, spec.scale, frame_norm, res.atlas.typical_act_F)
        used = [UsedFeature(f.id, f.strength, res.labels.get(f.id, "")) for f in spec.features]
        if spec.mode == "clamp":
            return SteeringPlan(lambda h: clamp_latents(sae, h, ids_K, values_K), used)
        directions_KD = sae.W_dec[ids_K]
        return SteeringPlan(lambda h: add_directions(h, directions_KD, values_K), used)

    from pipelines.model.transcribe import LANGUAGES, language_logits

    target, source = spec.toward_language, spec.source_language
    assert target is not None  # the spec has features or a target language
    for code in (target, source):
        if code is not None and code not in LANGUAGES:
            raise SteeringError(f"unknown language {code!r}: use a Whisper language code such as en, es, fr")
    selection = None if spec.method == "dom" else _selection(res, spec)
    grad_D = None
    if selection == "clip":  # the gradient pass also detects the source language
        source, grad_D = language_gradient(res.bundle, final_BTD, n_frames, target, source)
    elif source is None:
        source = LANGUAGES[int(language_logits(res.bundle, final_BTD[:1])[0].argmax())]
    if source == target:
        raise SteeringError(f"the clip is already {target!r}: pick another target or set source_language")
    if spec.method == "dom":
        if res.dom is None:
            raise SteeringError(
                "difference of means needs this run's activations: run `whisper-atlas extract`"
            )
        direction_D = torch.as_tensor(res.dom().direction(source, target))
        used = [UsedFeature(None, spec.strength, f"mean({target}) - mean({source})")]
    else:
        direction_D, used = _language_feature_direction(res, spec, source, target, grad_D)
    direction_D = direction_D.to(dtype=h_TD.dtype, device=h_TD.device)
    coef = torch.tensor([spec.strength * frame_norm], dtype=h_TD.dtype, device=h_TD.device)
    unit_1D = unit_rows(direction_D[None, :])
    return SteeringPlan(lambda h: add_directions(h, unit_1D, coef), used, source, target, selection)


def _selection(res: SteeringResources, spec: SteeringSpec) -> str:
    """Where the language effects of method `sae` come from: the atlas, or this clip's gradients."""
    selection = spec.selection
    if selection == "auto":
        selection = "atlas" if res.atlas.effects is not None else "clip"
    if selection == "atlas" and res.atlas.effects is None:
        raise SteeringError("the atlas has no language effects: build it, or use selection 'clip'")
    if selection == "clip" and res.layer is not None and res.layer != res.bundle.n_layers:
        raise SteeringError("selection 'clip' needs an SAE on the final encoder output; use 'atlas'")
    return selection


def _language_feature_direction(
    res: SteeringResources, spec: SteeringSpec, source: str, target: str, grad_D: torch.Tensor | None
) -> tuple[torch.Tensor, list[UsedFeature]]:
    """Effect-weighted sum of the unit decoder directions of the N features pushing target over source,
    scored by the atlas's language effects, or by this clip's gradient `grad_D` when given."""
    W_dec = res.sae.W_dec.detach()
    if grad_D is None:
        assert res.atlas.effects is not None
        score_F = torch.as_tensor(res.atlas.effects.delta(source, target), device=W_dec.device)
    else:
        score_F = unit_rows(W_dec) @ grad_D.to(W_dec.dtype)
    top_scores, top_ids = score_F.to(W_dec.dtype).topk(min(spec.n_features, res.sae.d_sae))
    keep = top_scores > 0
    if not bool(keep.any()):
        raise SteeringError(f"no feature raises {target!r} over {source!r} in this SAE")
    top_scores, top_ids = top_scores[keep], top_ids[keep]
    weights_K = top_scores / top_scores.sum()
    used = [
        UsedFeature(int(i), float(w) * spec.strength, res.labels.get(int(i), ""), float(s))
        for i, w, s in zip(top_ids, weights_K, top_scores)
    ]
    return weights_K @ unit_rows(W_dec[top_ids]), used


# ---------------------------------------------------------------------------------------------------------
# One request: encode once, plan, decode three states in one batch.


@dataclass
class EncodedClip:
    """One clip through the encoder once: what live analysis and steering both start from."""

    audio: np.ndarray
    input_features_BMT: torch.Tensor
    """(1, 80, 3000) log-mel."""
    final_BTD: torch.Tensor
    """(1, 1500, D) final encoder output."""
    site_TD: torch.Tensor
    """(T, D) real frames at the SAE's layer (a view of `final_BTD` when that is the final output)."""
    n_frames: int


def encode_clip(bundle: WhisperBundle, audio: np.ndarray, layer: int | None = None) -> EncodedClip:
    """Run the encoder once, keeping the final output and the real frames at `layer` (None = final)."""
    from pipelines.model.encoder import edit_layer, encode, features_for, real_frames

    n = real_frames(len(audio))
    feats_BMT = features_for(bundle, [audio])
    if layer is None or layer == bundle.n_layers:
        with torch.no_grad():
            final = encode(bundle, feats_BMT)
        return EncodedClip(audio, feats_BMT, final, final[0, :n], n)
    captured: list[torch.Tensor] = []

    def capture(out_BTD: torch.Tensor) -> torch.Tensor:
        captured.append(out_BTD[0, :n].detach().to(torch.float32, copy=True))

        return out_BTD

    with torch.no_grad(), edit_layer(bundle, layer, capture):
        final = encode(bundle, feats_BMT)
    return EncodedClip(audio, feats_BMT, final, captured[0], n)


TOP_LANGUAGES = 8
"""Language probabilities reported per transcript (the rest of Whisper's 99 are near zero)."""


def transcription_dict(t: Transcription) -> dict:
    """JSON view of a `Transcription`: text, language, top language probabilities, degeneracy flag."""
    probs = list(t.language_probs.items())[:TOP_LANGUAGES]
    return {
        "text": t.text,
        "language": t.language,
        "language_probs": {k: round(v, 4) for k, v in probs},
        "repetitive": t.repetitive,
    }


@dataclass
class SteerResult:
    baseline: Transcription
    """Transcription of the untouched encoder output."""
    reconstructed: Transcription
    """Transcription with the real frames replaced by the SAE reconstruction (no error term)."""
    steered: Transcription
    spec: SteeringSpec
    plan: SteeringPlan
    frame_norm: float
    n_frames: int
    hidden_3TD: torch.Tensor
    """Final encoder states decoded, in order baseline / reconstructed / steered (real frames only)."""

    def warnings(self) -> list[str]:
        out = []
        if self.steered.repetitive:
            out.append("the steered output degenerated (a repetition loop or nothing): lower the strength")
        if self.reconstructed.repetitive and not self.baseline.repetitive:
            out.append("the SAE reconstruction alone already degrades this clip")
        return out

    def to_dict(self) -> dict:
        """The JSON answer of the CLI and the API: three transcripts, what was applied, a word diff."""
        names = ("baseline", "reconstructed", "steered")
        return {
            **{name: transcription_dict(getattr(self, name)) for name in names},
            "features_used": [asdict(f) for f in self.plan.features_used],
            "source_language": self.plan.source_language,
            "target_language": self.plan.target_language,
            "selection": self.plan.selection,
            "mode": self.spec.mode,
            "method": self.spec.method,
            "scale": self.spec.scale,
            "frame_norm": round(self.frame_norm, 4),
            "diff": word_diff(self.baseline.text, self.steered.text),
            "warnings": self.warnings(),
        }


def steer(res: SteeringResources, audio: np.ndarray, spec: SteeringSpec) -> SteerResult:
    """Transcribe `audio` as is, through the SAE, and steered by `spec`, encoding once."""
    from pipelines.model.encoder import edit_layer, encode
    from pipelines.model.transcribe import transcribe_encoded

    clip = encode_clip(res.bundle, audio, res.layer)
    n = clip.n_frames
    with torch.no_grad():
        plan = plan_steering(res, spec, clip.site_TD, clip.final_BTD, n)
        site_edits = [lambda h: reconstruct(res.sae, h), plan.edit]
        if res.layer is None or res.layer == res.bundle.n_layers:
            states = [clip.final_BTD[0]]
            for edit in site_edits:
                state = clip.final_BTD[0].clone()
                state[:n] = edit(clip.site_TD)
                states.append(state)
            hidden_3TD = torch.stack(states)
        else:  # the edit must flow through the remaining encoder layers: one batched pass for both edits

            def edit_items(out_BTD: torch.Tensor) -> torch.Tensor:
                out = out_BTD.clone()
                with torch.autocast(out.device.type, enabled=False):  # the SAE in float32, as planned
                    for b, edit in enumerate(site_edits):
                        out[b, :n] = edit(out_BTD[b, :n].float()).to(out.dtype)
                return out

            with edit_layer(res.bundle, res.layer, edit_items):
                edited = encode(res.bundle, clip.input_features_BMT.expand(2, -1, -1))
            hidden_3TD = torch.cat([clip.final_BTD, edited])
        tokens = min(spec.max_new_tokens, MAX_NEW_TOKENS)
        baseline, reconstructed, steered = transcribe_encoded(
            res.bundle, hidden_3TD, max_new_tokens=tokens, n_frames=[n, n, n], first_row_is_reference=True
        )
    frame_norm = mean_frame_norm(clip.site_TD)
    return SteerResult(baseline, reconstructed, steered, spec, plan, frame_norm, n, hidden_3TD[:, :n])


def word_diff(before: str, after: str) -> list[dict[str, str]]:
    """Word-level diff: a list of {"op": "equal"|"delete"|"insert", "text": ...} (a replace is both)."""
    a, b = before.split(), after.split()
    ops: list[dict[str, str]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            ops.append({"op": "equal", "text": " ".join(a[i1:i2])})
        if tag in ("delete", "replace"):
            ops.append({"op": "delete", "text": " ".join(a[i1:i2])})
        if tag in ("insert", "replace"):
            ops.append({"op": "insert", "text": " ".join(b[j1:j2])})
    return ops
