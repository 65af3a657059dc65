"""What `analyze` produces and `build` reads: plain arrays and JSON under `data/runs/<run>/analysis/`.

    meta.json       AnalysisMeta (model, layer, corpus, languages, categories, frame counts, config, notes)
    features.npz    FeatureTable: one row per feature
    examples.npz    ExampleTable: top and quantile examples with their per-frame windows
    clips.npz       ClipTable: per manifest row, real frames and the uint8 log-mel
    text.json       per clip: Whisper's hypothesis and word alignment; per feature: label and top words
    interpretation.npz / interpretation.json
                    Interpretation: each feature's scored label, type and runner-ups; the taxonomy and
                    its controls
    annotations.*   every frame's annotations (`pipelines.annotate.frames`)
    parallel.npz    ParallelTable: each feature's traces over the versions of its top parallel-sentence
                    groups and its cross-lingual score (`pipelines.analysis.parallel`)

The folder is written beside the old one and swapped in, so `build` never reads half an analysis.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.annotate.frames import ARRAYS_NAME, FrameAnnotations
from pipelines.errors import missing_stage

KIND_TOP, KIND_QUANTILE = 0, 1
KINDS = ("top", "quantile")


@dataclass
class AnalysisMeta:
    model: str
    """The model the activations were extracted with."""
    transcriber: str
    """The model (bundle) that decoded the transcripts and language effects."""
    layer: int
    corpus: str
    n_frames: int
    n_features: int
    languages: list[str]
    """Corpus languages, the columns of the language tables."""
    lang_frames: list[int]
    categories: list[str]
    cat_frames: list[int]
    grid_edges: list[float]
    """Edges of the fixed log activation grid of `FeatureTable.hist_counts`."""
    effect_languages: list[str]
    """Columns of `FeatureTable.effects` (empty when effects were skipped)."""
    effect_clips: int
    """Encoder windows (speaker recordings or single clips) the language effects average over."""
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class FeatureTable:
    """Per-feature statistics (F rows; L corpus languages, K categories, E effect languages, G grid bins)."""

    fire_count: np.ndarray
    act_sum: np.ndarray
    max_act: np.ndarray
    hist_counts: np.ndarray
    """(F, G) firing frames per bin of the log grid."""
    lang_mass: np.ndarray
    """(F, L) activation mass per language."""
    lang_fires: np.ndarray
    cat_mass: np.ndarray
    cat_fires: np.ndarray
    neighbours: np.ndarray
    """(F, n) most similar features by decoder cosine."""
    neighbour_cos: np.ndarray
    coactive: np.ndarray
    """(F, n) partners by Jaccard of firing frames (-1 pads)."""
    coactive_score: np.ndarray
    effects: np.ndarray
    """(F, E) linear effect on log p(language) (see `pipelines.analysis.effects`)."""
    label_score: np.ndarray


@dataclass
class ExampleTable:
    """Examples sorted by (feature, kind, rank); `acts` holds the windows back to back (`acts_len` each)."""

    feature: np.ndarray
    kind: np.ndarray
    """KIND_TOP or KIND_QUANTILE."""
    rank: np.ndarray
    quantile: np.ndarray
    """Upper edge of the example's activation bin over the feature's max (1.0 for top examples)."""
    clip: np.ndarray
    """Manifest row."""
    start: np.ndarray
    end: np.ndarray
    peak: np.ndarray
    peak_act: np.ndarray
    acts: np.ndarray
    acts_len: np.ndarray


@dataclass
class ClipTable:
    """Per manifest row: real frames and the log-mel stored once as uint8 for spectrograms."""

    n_frames: np.ndarray
    """Real encoder frames found in the shards (0 for a clip that was not extracted)."""
    mel_frames: np.ndarray
    """Log-mel frames kept (2 per encoder frame); the clip's `mel` is (n_mels, mel_frames) row-major."""
    mel: np.ndarray
    """All clips' uint8 log-mels back to back."""
    vmin: np.ndarray
    vmax: np.ndarray
    n_mels: np.ndarray
    """Scalar: mel bins."""


@dataclass
class ClipText:
    key: str
    language: str
    """The language the transcript was decoded in ('' = detected)."""
    hypothesis: str
    words: list[tuple[str, float, float]]


@dataclass
class Interpretation:
    """What each feature detects, scored on held-out frames (`pipelines.analysis.interpret`), F rows.

    A hypothesis is one annotation value ("phone = /s/", "language = es"); its score is the balanced
    accuracy of the hypothesis as a predictor of the feature being active (0.5 = chance, whatever the base
    rate); the label is the best one, "unexplained" below `threshold`."""

    label: list[str]
    """The best hypothesis in words (also for unexplained features: the best guess)."""
    label_type: list[str]
    """language, speaker, phonetic, lexical, positional, acoustic, boundary, non-speech or unexplained;
    '' for dead features."""
    label_score: np.ndarray
    """float32 (F,) balanced accuracy of the label on the held-out frames."""
    label_precision: np.ndarray
    """float32 (F,) share of the feature's active held-out frames where the label holds."""
    label_recall: np.ndarray
    """float32 (F,) share of the held-out frames with the label where the feature is active."""
    language_vs_speaker: np.ndarray
    """float32 (F,) best language score minus best speaker score (NaN unless the type is language)."""
    runner_ups: list[list[dict]]
    """Per feature, the next best hypotheses: {label, type, score, precision, recall}."""
    stability: np.ndarray
    """float32 (F,) best decoder cosine in an SAE trained with another seed (NaN when none was trained)."""
    summary: dict[str, Any]
    """threshold, held-out frames and clips, `counts` (type -> live features), `control_counts`
    ({random_sae, shuffled} -> type -> features), `explained_share` ({sae, random_sae, shuffled}),
    `stable_share` (share of live features with stability >= 0.7, or None)."""

    ARRAYS = ("label_score", "label_precision", "label_recall", "language_vs_speaker", "stability")

    def save(self, folder: Path) -> None:
        np.savez(folder / "interpretation.npz", **{name: getattr(self, name) for name in self.ARRAYS})
        text = {
            "label": self.label,
            "label_type": self.label_type,
            "runner_ups": self.runner_ups,
            "summary": self.summary,
        }
        (folder / "interpretation.json").write_text(json.dumps(text, ensure_ascii=False))

    @classmethod
    def load(cls, folder: Path) -> "Interpretation | None":
        if not (folder / "interpretation.json").exists():
            return None
        text = json.loads((folder / "interpretation.json").read_text())
        with np.load(folder / "interpretation.npz") as npz:
            arrays = {name: npz[name] for name in cls.ARRAYS}
        return cls(
            text["label"],
            text["label_type"],
            runner_ups=text["runner_ups"],
            summary=text["summary"],
            **arrays,
        )


@dataclass
class ParallelTable:
    """Each feature on the same sentence in other languages (`pipelines.analysis.parallel.parallel_traces`).

    R rows, one per (feature, group rank, clip of the group), sorted by feature, rank, then the group's
    clips (by language, then manifest row); `trace` holds the rows' traces back to back (`trace_len` each)."""

    groups: np.ndarray
    """str (G,) keys of the manifest's parallel groups that rows name."""
    feature: np.ndarray
    """int32 (R,)."""
    rank: np.ndarray
    """int16 (R,) 0 = the group where the feature fires hardest."""
    group: np.ndarray
    """int32 (R,) index into `groups`."""
    clip: np.ndarray
    """int32 (R,) manifest row."""
    frames_per_point: np.ndarray
    """int16 (R,) encoder frames each trace point is the max over."""
    trace: np.ndarray
    """float16 activations: point i of a row = max over the clip's frames [i, i + 1) * frames_per_point."""
    trace_len: np.ndarray
    """int32 (R,)."""
    cross_lingual: np.ndarray
    """float32 (F,) in [0, 1]: 1 = fires equally on every language version, 0 = on one only; NaN when it
    fires in no parallel group."""

    FILE = "parallel.npz"

    def save(self, folder: Path) -> None:
        np.savez(folder / self.FILE, **{f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def load(cls, folder: Path) -> "ParallelTable | None":
        if not (folder / cls.FILE).exists():
            return None
        with np.load(folder / cls.FILE) as npz:
            return cls(**{f.name: npz[f.name] for f in fields(cls)})


@dataclass
class AnalysisResult:
    meta: AnalysisMeta
    features: FeatureTable
    examples: ExampleTable
    clips: ClipTable
    clip_text: list[ClipText]
    labels: list[str]
    top_words: list[list[str]]
    interpretation: Interpretation | None = None
    annotations: FrameAnnotations | None = None
    """Every frame's annotations (`pipelines.annotate.frames` owns their files in this folder)."""
    parallel: ParallelTable | None = None
    """Traces over parallel-sentence groups and cross-lingual scores (`pipelines.analysis.parallel`)."""

    def save(self, folder: Path) -> None:
        """Write the analysis into a fresh folder beside `folder`, then swap it in."""
        tmp = folder.with_name(folder.name + ".building")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        (tmp / "meta.json").write_text(json.dumps(asdict(self.meta), indent=1))
        for name in ("features", "examples", "clips"):
            table = getattr(self, name)
            np.savez(tmp / f"{name}.npz", **{f.name: getattr(table, f.name) for f in fields(table)})
        text = {
            "clips": [asdict(c) for c in self.clip_text],
            "labels": self.labels,
            "top_words": self.top_words,
        }
        (tmp / "text.json").write_text(json.dumps(text, ensure_ascii=False))
        if self.interpretation is not None:
            self.interpretation.save(tmp)
        if self.annotations is not None:
            self.annotations.save(tmp)
        if self.parallel is not None:
            self.parallel.save(tmp)
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, folder: Path) -> "AnalysisResult":
        if not (folder / "meta.json").exists():
            raise missing_stage("analysis", folder, "analyze")
        text = json.loads((folder / "text.json").read_text())

        def table(kind: type, name: str) -> Any:
            with np.load(folder / f"{name}.npz") as npz:
                return kind(**{f.name: npz[f.name] for f in fields(kind)})

        return cls(
            meta=AnalysisMeta(**json.loads((folder / "meta.json").read_text())),
            features=table(FeatureTable, "features"),
            examples=table(ExampleTable, "examples"),
            clips=table(ClipTable, "clips"),
            clip_text=[
                ClipText(c["key"], c["language"], c["hypothesis"], [tuple(w) for w in c["words"]])
                for c in text["clips"]
            ],
            labels=text["labels"],
            top_words=text["top_words"],
            interpretation=Interpretation.load(folder),
            annotations=FrameAnnotations.load(folder) if (folder / ARRAYS_NAME).exists() else None,
            parallel=ParallelTable.load(folder),
        )


def load_clip_text(folder: Path, model: str) -> dict[str, ClipText]:
    """Transcripts of a previous analysis made with the same model, by clip key (to skip re-decoding)."""
    try:
        if json.loads((folder / "meta.json").read_text())["transcriber"] != model:
            return {}
        raw = json.loads((folder / "text.json").read_text())["clips"]
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        return {}
    return {
        c["key"]: ClipText(c["key"], c["language"], c["hypothesis"], [tuple(w) for w in c["words"]])
        for c in raw
    }
