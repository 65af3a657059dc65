"""One opened atlas version as the API's models: overview, feature list, feature and clip details.

Every read goes through the version's `AtlasReader` (pipelines/atlas/reader.py). Per-feature data is read a
block of features at a time (backend/services/feature_blocks.py) and kept in a byte-bounded LRU; small
whole-atlas data (run metadata, clips, word alignments, feature labels) is read once when the file is opened.
Everything held here belongs to one file version: a swapped atlas gets a fresh `AtlasService`.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from backend.db import AtlasHandle
from backend.errors import NotFoundError
from backend.schemas import (
    AtlasOverview,
    ClipDetail,
    ClipFeature,
    Count,
    DensityBin,
    Example,
    FeatureDetail,
    FeaturePage,
    FeatureSummary,
    Histogram,
    LanguageEffect,
    ParallelGroup,
    ParallelVersion,
    Phone,
    Related,
    Share,
    SteeringPreset,
    SteeringPresets,
    Taxonomy,
    Word,
)
from backend.services.cache import SizedLRU
from backend.services.feature_blocks import IndexedBlock
from backend.services.stored_pages import StoredPages
from backend.settings import Settings
from pipelines.atlas.reader import FeatureFilter, feature_row
from pipelines.atlas.schema import FRAME_SECONDS, LABEL_TYPES

DETAIL_COLUMNS = [
    *FeatureSummary.model_fields,
    "mean_act",
    "label_source",
    "speech_fraction",
    "top_words",
    "cross_lingual",
]
CLIP_FEATURES_SHOWN = 40
"""Features on a clip's timeline (strongest first)."""
BLOCK_CACHE_SHARE = 0.55
"""Share of `Settings.cache_mb` for feature blocks (the provider's page and media caches take the rest)."""
BEST_PER_TYPE = 6
"""Features shown for each type in the taxonomy."""
NO_TAXONOMY = (
    "This atlas holds no scored labels (its analysis predates them): run `whisper-atlas analyze` and "
    "`whisper-atlas build` again."
)


@dataclass(frozen=True)
class ClipRow:
    """A row of the `clips` table, kept in memory (`audio_path` never leaves the server)."""

    id: int
    key: str
    category: str
    language: str
    transcript: str
    hypothesis: str
    source: str
    licence: str
    group_key: str
    speaker: str
    duration: float
    n_frames: int
    audio_path: str


@dataclass(frozen=True)
class Mel:
    """A clip's log-mel as stored: uint8 (n_mels, n_frames), low frequency bins first, 10 ms per frame."""

    mel_MT: np.ndarray


class AtlasService:
    """Everything the pages and the API ask of one atlas file version."""

    def __init__(self, handle: AtlasHandle, settings: Settings) -> None:
        self.handle = handle
        self.version = handle.version
        self.block_features = settings.block_features
        self.reader = handle.reader
        self.stored_pages: StoredPages | None = None
        """Its pre-rendered feature pages, when the provider serves them (backend/services/provider.py)."""
        budget = int(settings.cache_mb * 2**20 * BLOCK_CACHE_SHARE)
        self._blocks: SizedLRU[IndexedBlock] = SizedLRU(budget, lambda b: b.nbytes)
        self._load_summary()

    # -- whole-atlas data, read once --------------------------------------------------------------------

    def _load_summary(self) -> None:
        reader = self.reader
        self.run: dict[str, object] = reader.run_metadata()
        self.clips: dict[int, ClipRow] = {
            row["id"]: ClipRow(**{name: row[name] for name in ClipRow.__dataclass_fields__})
            for row in reader.clips()
        }
        self.words: dict[int, list[Word]] = {
            clip_id: [Word(word=word, start=start, end=end) for word, start, end in words]
            for clip_id, words in reader.clip_words().items()
        }
        self.phones: dict[int, list[Phone]] = {
            clip_id: [Phone(phone=phone, start=start, end=end) for phone, start, end in phones]
            for clip_id, phones in reader.clip_phones().items()
        }
        self.feature_ids, labels, density = reader.feature_index()
        self.labels: dict[int, str] = dict(zip(self.feature_ids.tolist(), labels))
        self.live_ids = self.feature_ids[density > 0]
        self.density_bins = [
            DensityBin(log10_lo=lo, log10_hi=hi, n_features=n) for lo, hi, n in reader.density_histogram()
        ]
        self.languages_present = sorted({c.language for c in self.clips.values() if c.language})
        self.categories_present = sorted({c.category for c in self.clips.values()})
        self.interpretation = self.run.get("interpretation")
        """The analysis's scoring summary (`pipelines.atlas.schema`: `run.interpretation`), None without."""
        self.label_types = LABEL_TYPES if self.interpretation else ()
        """The types the feature list can filter by (none in an atlas without scored labels)."""

    def presets(self) -> SteeringPresets:
        """The steering presets `whisper-atlas calibrate` measured (none in an atlas built without it)."""
        steering = self.run.get("steering") or {}
        assert isinstance(steering, dict)
        presets = [
            SteeringPreset(
                **p, method=p["spec"].get("method", "sae") if not p["spec"].get("features") else "features"
            )
            for p in steering.get("presets", [])
        ]
        return SteeringPresets(
            presets=presets, rank=steering.get("rank"), rank_comparison=steering.get("rank_comparison", {})
        )

    def overview(self) -> AtlasOverview:
        def counts(attr: str) -> list[Count]:
            clips: dict[str, int] = defaultdict(int)
            seconds: dict[str, float] = defaultdict(float)
            for clip in self.clips.values():
                name = getattr(clip, attr) or "—"
                clips[name] += 1
                seconds[name] += clip.duration
            return [
                Count(name=name, clips=clips[name], minutes=seconds[name] / 60)
                for name in sorted(clips, key=lambda n: -seconds[n])
            ]

        return AtlasOverview(
            version=self.version,
            run=self.run,
            n_features=len(self.feature_ids),
            n_live=len(self.live_ids),
            n_clips=len(self.clips),
            minutes=sum(c.duration for c in self.clips.values()) / 60,
            languages=counts("language"),
            categories=counts("category"),
            density_histogram=self.density_bins,
        )

    def random_live_feature(self) -> int:
        if len(self.live_ids) == 0:
            raise NotFoundError("The atlas has no live features: every feature is dead.")
        return int(self.live_ids[random.randrange(len(self.live_ids))])

    def neighbours_in_order(self, feature_id: int) -> tuple[int | None, int | None]:
        """The previous and next live feature ids around `feature_id`."""
        i = int(np.searchsorted(self.live_ids, feature_id))
        prev_id = int(self.live_ids[i - 1]) if i > 0 else None
        j = i + 1 if i < len(self.live_ids) and self.live_ids[i] == feature_id else i
        next_id = int(self.live_ids[j]) if j < len(self.live_ids) else None
        return prev_id, next_id

    def clip(self, clip_id: int) -> ClipRow:
        clip = self.clips.get(clip_id)
        if clip is None:
            raise NotFoundError(f"No clip {clip_id} in this atlas (ids 0..{len(self.clips) - 1}).")
        return clip

    def clip_words(self, clip_id: int) -> list[Word]:
        return self.words.get(clip_id, [])

    def taxonomy(self) -> Taxonomy:
        """Features per type beside the two controls, and each type's best features (a 404 without labels)."""
        summary = self.interpretation
        if not isinstance(summary, dict):
            raise NotFoundError(NO_TAXONOMY)
        best = self.reader.best_of_types(BEST_PER_TYPE)
        return Taxonomy(
            counts=_every_type(self.reader.type_counts()),
            control_counts={name: _every_type(c) for name, c in summary.get("control_counts", {}).items()},
            explained_share=summary.get("explained_share", {}),
            threshold=summary["threshold"],
            heldout_frames=summary["heldout_frames"],
            heldout_clips=summary["heldout_clips"],
            stable_share=summary.get("stable_share"),
            best={
                kind: [FeatureSummary(**row) for row in best[kind]] for kind in LABEL_TYPES if kind in best
            },
        )

    # -- the feature list ----------------------------------------------------------------------------------

    def list_features(self, spec: FeatureFilter) -> FeaturePage:
        total, rows = self.reader.list_features(spec)
        items = [FeatureSummary(**row) for row in rows]
        return FeaturePage(total=total, limit=spec.limit, offset=spec.offset, items=items)

    # -- one feature ---------------------------------------------------------------------------------------

    def feature(self, feature_id: int) -> FeatureDetail:
        block = self._block(feature_id)
        found = block.features.rows(feature_id)
        if not found:
            raise NotFoundError(self._no_feature(feature_id))
        row = feature_row(found[0])
        top: list[Example] = []
        quantile: list[Example] = []
        for example in block.examples.rows(feature_id):
            if example["clip_id"] in self.clips:  # always, in a consistent build; never fail a page
                (top if example["kind"] == "top" else quantile).append(self._example(example))
        prev_id, next_id = self.neighbours_in_order(feature_id)
        return FeatureDetail(
            **{name: row[name] for name in DETAIL_COLUMNS},
            activation_histogram=Histogram(edges=row["hist_edges"], counts=row["hist_counts"]),
            languages=_shares(block.languages.rows(feature_id), "language"),
            categories=_shares(block.categories.rows(feature_id), "category"),
            language_effects=[
                LanguageEffect(**_without(r, "feature_id")) for r in block.effects.rows(feature_id)
            ],
            neighbours=self._related(row["neighbours"], row["neighbour_cos"], feature_id),
            coactive=self._related(row["coactive"], row["coactive_score"], feature_id),
            top_examples=top,
            quantile_examples=quantile,
            prev_id=prev_id,
            next_id=next_id,
            parallel=self._parallel(block.parallel.rows(feature_id)),
        )

    def _parallel(self, rows: list[dict]) -> list[ParallelGroup]:
        """A feature's `feature_parallel` rows as its groups by rank, each group's versions by language."""
        by_rank: dict[int, list[dict]] = defaultdict(list)
        for row in rows:
            if row["clip_id"] in self.clips:
                by_rank[row["rank"]].append(row)
        groups = []
        for rank, members in sorted(by_rank.items()):
            versions = [
                ParallelVersion(
                    clip_id=clip.id,
                    clip_key=clip.key,
                    language=clip.language,
                    duration=clip.duration,
                    peak=r["peak"],
                    seconds_per_point=round(r["frames_per_point"] * FRAME_SECONDS, 3),
                    trace=np.frombuffer(r["trace"], "<f2").astype(np.float64).round(4).tolist(),
                )
                for r in members
                for clip in (self.clips[r["clip_id"]],)
            ]
            versions.sort(key=lambda v: (v.language, v.clip_id))
            groups.append(
                ParallelGroup(
                    group=members[0]["group_key"],
                    rank=rank,
                    peak=max(v.peak for v in versions),
                    similarity=_similarity(versions),
                    versions=versions,
                )
            )
        return groups

    def _no_feature(self, feature_id: int) -> str:
        last = int(self.feature_ids[-1]) if len(self.feature_ids) else -1
        return f"No feature {feature_id} in this atlas (ids 0..{last})."

    def _related(self, ids: list[int], scores: list[float], own: int) -> list[Related]:
        return [
            Related(id=i, label=self.labels.get(i, ""), score=s)
            for i, s in zip(ids, scores)
            if i != own and i in self.labels
        ]

    def _example(self, row: dict) -> Example:
        clip = self.clips[row["clip_id"]]
        start, end = round(row["start_frame"] * FRAME_SECONDS, 3), round(row["end_frame"] * FRAME_SECONDS, 3)
        return Example(
            **_without(row, "feature_id"),
            clip_key=clip.key,
            language=clip.language,
            category=clip.category,
            source=clip.source,
            licence=clip.licence,
            start=start,
            end=end,
            words=[w for w in self.words.get(clip.id, ()) if w.end > start and w.start < end],
        )

    def _block(self, feature_id: int) -> IndexedBlock:
        index = feature_id // self.block_features
        lo = index * self.block_features
        return self._blocks.get_or_make(
            index, lambda: IndexedBlock.of(self.reader.feature_block(lo, lo + self.block_features - 1))
        )

    # -- one clip ------------------------------------------------------------------------------------------

    def clip_detail(self, clip_id: int) -> ClipDetail:
        clip = self.clip(clip_id)
        rows = self.reader.clip_top_features(clip_id, CLIP_FEATURES_SHOWN)
        features = [
            ClipFeature(
                feature_id=f,
                label=self.labels.get(f, ""),
                label_type=label_type if label_type in LABEL_TYPES else "",
                kind=kind,
                start=round(s * FRAME_SECONDS, 3),
                end=round(e * FRAME_SECONDS, 3),
                start_frame=s,
                end_frame=e,
                peak_frame=peak,
                peak_act=act,
                acts=acts,
            )
            for f, kind, s, e, peak, act, acts, label_type in rows
        ]
        fields = {name: getattr(clip, name) for name in ClipDetail.model_fields if hasattr(clip, name)}
        return ClipDetail(
            **fields, words=self.clip_words(clip_id), phones=self.phones.get(clip_id, []), features=features
        )

    def mel(self, clip_id: int) -> Mel:
        self.clip(clip_id)
        stored = self.reader.clip_mel(clip_id)
        if stored is None:
            raise NotFoundError(f"Clip {clip_id} has no stored log-mel spectrogram: rebuild the atlas.")
        n_mels, n_frames, mel = stored
        mel_MT = np.frombuffer(mel, dtype=np.uint8)
        if mel_MT.size != n_mels * n_frames:
            raise NotFoundError(f"Clip {clip_id}'s stored log-mel is damaged: rebuild the atlas.")
        return Mel(mel_MT=mel_MT.reshape(n_mels, n_frames))


def _similarity(versions: list[ParallelVersion]) -> float | None:
    """How evenly a feature peaks across a group's languages (`ParallelGroup.similarity`), None unless it
    fires on at least one of 2 or more languages."""
    peaks: dict[str, float] = {}
    for v in versions:
        peaks[v.language] = max(peaks.get(v.language, 0.0), v.peak)
    top = max(peaks.values(), default=0.0)
    if len(peaks) < 2 or top <= 0:
        return None
    return min(max((sum(peaks.values()) / top - 1) / (len(peaks) - 1), 0.0), 1.0)


def _every_type(counts: dict[str, int]) -> dict[str, int]:
    """Features per type with every type listed, in the taxonomy's order (any other type found last)."""
    return {**dict.fromkeys(LABEL_TYPES, 0), **counts}


def _without(row: dict, key: str) -> dict:
    return {k: v for k, v in row.items() if k != key}


def _shares(rows: list[dict], name: str) -> list[Share]:
    """A feature's language (or category) shares, largest first."""
    return [
        Share(
            name=r[name],
            act_share=r["act_share"],
            frame_share=r["frame_share"],
            selectivity=r["selectivity"],
            fire_rate=r["fire_rate"],
        )
        for r in rows
    ]
