"""Queries over one opened atlas: the overview, the feature list, feature and clip details, clip log-mels.

DuckDB is a column store: a point lookup costs about a millisecond whatever its size, so a feature page
built from one query per table would spend ~10 ms in the database alone. Instead, per-feature tables (rows
sorted by feature id, see pipelines/atlas/schema.py) are read a *block* of features at a time, in one range
query per table, and kept in a byte-bounded LRU; a feature page then slices arrays already in memory. Small
whole-atlas data (run metadata, clips, word alignments, feature labels) is read once when the file is opened.
Everything cached here belongs to one file version: a swapped atlas gets a fresh `AtlasService`.
"""

from __future__ import annotations

import json
import random
import re
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal

import numpy as np
import pyarrow as pa

from backend.db import AtlasDB, AtlasHandle
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
    Related,
    Share,
    Word,
)
from backend.services.cache import SizedLRU
from backend.settings import Settings
from pipelines.atlas.schema import FRAME_SECONDS

if TYPE_CHECKING:
    from backend.services.prerender import Prerenderer

SortKey = Literal["id", "density_desc", "density_asc", "label_score", "selectivity", "max_act"]
ORDER_BY: dict[str, str] = {
    "id": "id",
    "density_desc": "density DESC, id",
    "density_asc": "density ASC, id",
    "label_score": "label_score DESC, id",
    "selectivity": "top_language_selectivity DESC, id",
    "max_act": "max_act DESC, id",
}
"""Allowed sort orders of the feature list (the only SQL text a request can choose)."""

SUMMARY_COLUMNS = list(FeatureSummary.model_fields)
DETAIL_COLUMNS = [*SUMMARY_COLUMNS, "mean_act", "label_source", "speech_fraction", "top_words"]
CLIP_FEATURES_SHOWN = 40
"""Features on a clip's timeline (strongest first)."""


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


@dataclass
class FilterSpec:
    """The feature-list query (validated by `backend.deps.feature_filters`); the defaults filter nothing."""

    q: str = ""
    """A feature id (exact match listed first) or text found in the label or the top words."""
    language: str = ""
    """Top language, '' for any."""
    category: str = ""
    """Top category, '' for any."""
    min_density: float = 0.0
    max_density: float = 1.0
    min_score: float = 0.0
    """Lowest label score."""
    min_selectivity: float = 0.0
    """Lowest selectivity of the top language."""
    include_dead: bool = False
    """List features that never fire (density 0) too."""
    sort: SortKey = "id"
    limit: int = 50
    offset: int = 0


class _Columns:
    """An Arrow table as numpy columns (list columns as offsets + flat values), rows grouped by a key column.

    Rows must arrive sorted by `key`; `rows(k)` then returns the rows of key `k` as dicts of plain Python
    values, converting only those rows (a block holds tens of thousands, a page needs a few dozen).
    """

    def __init__(self, table: pa.Table, key: str) -> None:
        self.scalars: dict[str, np.ndarray] = {}
        self.lists: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name in table.column_names:
            column = table.column(name).combine_chunks()
            if pa.types.is_list(column.type):
                self.lists[name] = (column.offsets.to_numpy(), column.values.to_numpy(zero_copy_only=False))
            else:
                self.scalars[name] = column.to_numpy(zero_copy_only=False)
        keys = self.scalars[key]
        firsts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, np.int64)
        lasts = np.r_[firsts[1:], len(keys)]
        self.ranges: dict[int, tuple[int, int]] = {
            int(keys[a]): (int(a), int(b)) for a, b in zip(firsts.tolist(), lasts.tolist())
        }
        self.nbytes = sum(_nbytes(v) for v in self.scalars.values()) + sum(
            o.nbytes + _nbytes(v) for o, v in self.lists.values()
        )

    def rows(self, key: int) -> list[dict]:
        a, b = self.ranges.get(key, (0, 0))
        columns = {name: values[a:b].tolist() for name, values in self.scalars.items()}
        for name, (offsets, values) in self.lists.items():
            columns[name] = [values[offsets[i] : offsets[i + 1]].tolist() for i in range(a, b)]
        return [dict(zip(columns, row)) for row in zip(*columns.values())]


def _nbytes(array: np.ndarray) -> int:
    """Memory of a numpy array, counting the Python strings of object arrays (~60 bytes each)."""
    return array.nbytes + (60 * len(array) if array.dtype == object else 0)


@dataclass
class _Block:
    """The rows of every per-feature table for one range of feature ids."""

    features: _Columns
    examples: _Columns
    languages: _Columns
    categories: _Columns
    effects: _Columns

    @property
    def nbytes(self) -> int:
        return sum(
            c.nbytes for c in (self.features, self.examples, self.languages, self.categories, self.effects)
        )


class AtlasService:
    """Everything the pages and the API ask of one atlas file version."""

    def __init__(self, handle: AtlasHandle, settings: Settings) -> None:
        self.handle = handle
        self.version = handle.version
        self.block_features = settings.block_features
        budget = settings.cache_mb * 2**20
        self._blocks: SizedLRU[_Block] = SizedLRU(int(budget * 0.55), lambda b: b.nbytes)
        self.media: SizedLRU[bytes] = SizedLRU(int(budget * 0.15), len)
        """Rendered PNGs and WAV windows, keyed by the caller."""
        self.pages: SizedLRU[bytes] = SizedLRU(int(budget * 0.3), len)
        """Rendered pages (gzip), keyed by the caller."""
        self.background: Prerenderer | None = None
        """The background job filling `pages` for this version, if one was started."""
        self._load_summary()

    # -- whole-atlas data, read once --------------------------------------------------------------------

    def _load_summary(self) -> None:
        cur = self.handle.cursor()
        self.run: dict[str, object] = {
            key: json.loads(value)
            for key, value in cur.execute("SELECT key, value FROM run ORDER BY key").fetchall()
        }
        clip_columns = ", ".join(ClipRow.__dataclass_fields__)
        self.clips: dict[int, ClipRow] = {
            row[0]: ClipRow(*row)
            for row in cur.execute(f"SELECT {clip_columns} FROM clips ORDER BY id").fetchall()
        }
        words: dict[int, list[Word]] = defaultdict(list)
        for clip_id, word, start, end in cur.execute(
            'SELECT clip_id, word, start, "end" FROM clip_words ORDER BY clip_id, idx'
        ).fetchall():
            words[clip_id].append(Word(word=word, start=start, end=end))
        self.words: dict[int, list[Word]] = dict(words)
        ids, labels, density = (
            cur.execute("SELECT id, label, density FROM features ORDER BY id").fetchnumpy().values()
        )
        self.feature_ids = np.asarray(ids, dtype=np.int64)
        self.labels: dict[int, str] = dict(zip(self.feature_ids.tolist(), list(labels)))
        self.live_ids = self.feature_ids[np.asarray(density) > 0]
        self.density_bins = [
            DensityBin(log10_lo=lo, log10_hi=hi, n_features=n)
            for lo, hi, n in cur.execute(
                "SELECT log10_lo, log10_hi, n_features FROM density_histogram ORDER BY bin"
            ).fetchall()
        ]
        self.languages_present = sorted({c.language for c in self.clips.values() if c.language})
        self.categories_present = sorted({c.category for c in self.clips.values()})

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

    # -- the feature list ----------------------------------------------------------------------------------

    def list_features(self, spec: FilterSpec) -> FeaturePage:
        where: list[str] = ["TRUE"]
        params: list[object] = []
        if not spec.include_dead:
            where.append("density > 0")
        needle = spec.q.strip().lower()
        exact_id = int(needle) if re.fullmatch(r"[0-9]{1,9}", needle) else None
        if needle:
            clauses = ["contains(lower(label || ' ' || array_to_string(top_words, ' ')), ?)"]
            params.append(needle)
            if exact_id is not None:
                clauses.append("id = ?")
                params.append(exact_id)
            where.append(f"({' OR '.join(clauses)})")
        for column, value, op in (
            ("top_language", spec.language, "="),
            ("top_category", spec.category, "="),
            ("density", spec.min_density, ">="),
            ("density", spec.max_density, "<="),
            ("label_score", spec.min_score, ">="),
            ("top_language_selectivity", spec.min_selectivity, ">="),
        ):
            if value != "":
                where.append(f"{column} {op} ?")
                params.append(value)
        condition = " AND ".join(where)
        cur = self.handle.cursor()
        ((total,),) = cur.execute(f"SELECT count(*) FROM features WHERE {condition}", params).fetchall()
        order, order_params = ORDER_BY[spec.sort], []
        if exact_id is not None:
            order, order_params = f"(id = ?) DESC, {order}", [exact_id]
        columns = ", ".join(SUMMARY_COLUMNS)
        rows = cur.execute(
            f"SELECT {columns} FROM features WHERE {condition} ORDER BY {order} LIMIT ? OFFSET ?",
            [*params, *order_params, spec.limit, spec.offset],
        ).fetchall()
        items = [FeatureSummary(**dict(zip(SUMMARY_COLUMNS, row))) for row in rows]
        return FeaturePage(total=total, limit=spec.limit, offset=spec.offset, items=items)

    # -- one feature ---------------------------------------------------------------------------------------

    def feature(self, feature_id: int) -> FeatureDetail:
        block = self._block(feature_id)
        found = block.features.rows(feature_id)
        if not found:
            raise NotFoundError(self._no_feature(feature_id))
        row = found[0]
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
        )

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

    def _block(self, feature_id: int) -> _Block:
        index = feature_id // self.block_features
        return self._blocks.get_or_make(index, lambda: self._load_block(index))

    def _load_block(self, index: int) -> _Block:
        """One range query per table (rows are sorted by feature id, so DuckDB reads one stretch)."""
        lo = index * self.block_features
        cur = self.handle.cursor()

        def columns(sql: str, key: str = "feature_id") -> _Columns:
            return _Columns(cur.sql(sql, params=[lo, lo + self.block_features - 1]).to_arrow_table(), key)

        per_feature = "WHERE feature_id BETWEEN ? AND ? ORDER BY feature_id"
        return _Block(
            features=columns("SELECT * FROM features WHERE id BETWEEN ? AND ? ORDER BY id", key="id"),
            examples=columns(
                "SELECT feature_id, kind, rank, quantile, clip_id, start_frame, end_frame, peak_frame, "
                f"peak_act, acts FROM examples {per_feature}, kind DESC, rank"
            ),
            languages=columns(f"SELECT * FROM feature_languages {per_feature}, act_share DESC"),
            categories=columns(f"SELECT * FROM feature_categories {per_feature}, act_share DESC"),
            effects=columns(f"SELECT * FROM feature_language_effects {per_feature}, effect DESC"),
        )

    # -- one clip ------------------------------------------------------------------------------------------

    def clip_detail(self, clip_id: int) -> ClipDetail:
        clip = self.clip(clip_id)
        rows = (
            self.handle.cursor()
            .execute(
                """
                WITH best AS (
                    SELECT arg_max(rowid, peak_act) AS row FROM examples WHERE clip_id = ?
                    GROUP BY feature_id ORDER BY max(peak_act) DESC, feature_id LIMIT ?
                )
                SELECT feature_id, kind, start_frame, end_frame, peak_frame, peak_act, acts FROM examples
                WHERE rowid IN (SELECT row FROM best) ORDER BY peak_act DESC, feature_id
                """,
                [clip_id, CLIP_FEATURES_SHOWN],
            )
            .fetchall()
        )
        features = [
            ClipFeature(
                feature_id=f,
                label=self.labels.get(f, ""),
                kind=kind,
                start=round(s * FRAME_SECONDS, 3),
                end=round(e * FRAME_SECONDS, 3),
                start_frame=s,
                end_frame=e,
                peak_frame=peak,
                peak_act=act,
                acts=acts,
            )
            for f, kind, s, e, peak, act, acts in rows
        ]
        fields = {name: getattr(clip, name) for name in ClipDetail.model_fields if hasattr(clip, name)}
        return ClipDetail(**fields, words=self.clip_words(clip_id), features=features)

    def mel(self, clip_id: int) -> Mel:
        self.clip(clip_id)
        rows = (
            self.handle.cursor()
            .execute("SELECT n_mels, n_frames, mel FROM clip_mels WHERE clip_id = ?", [clip_id])
            .fetchall()
        )
        if not rows:
            raise NotFoundError(f"Clip {clip_id} has no stored log-mel spectrogram: rebuild the atlas.")
        n_mels, n_frames, mel = rows[0]
        mel_MT = np.frombuffer(mel, dtype=np.uint8)
        if mel_MT.size != n_mels * n_frames:
            raise NotFoundError(f"Clip {clip_id}'s stored log-mel is damaged: rebuild the atlas.")
        return Mel(mel_MT=mel_MT.reshape(n_mels, n_frames))


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


class AtlasProvider:
    """The service for the atlas file as it is now: a new one (with empty caches) after every swap."""

    def __init__(self, settings: Settings, on_open: Callable[[AtlasService], None] | None = None) -> None:
        self.settings = settings
        self.db = AtlasDB(settings.atlas_path, settings.duckdb_memory_mb, settings.atlas_check_interval_s)
        self.on_open = on_open
        """Called with each newly opened service (the app starts pre-rendering its pages)."""
        self._service: AtlasService | None = None
        self._lock = threading.Lock()
        self._closed = False

    def is_current(self, service: AtlasService) -> bool:
        """Whether `service` still serves the live file (not swapped out, server not shut down)."""
        return not self._closed and self._service is service

    def close(self) -> None:
        self._closed = True

    def current(self) -> AtlasService:
        """Raises `AtlasUnavailableError` (naming the build command) while there is no atlas."""
        handle = self.db.handle()
        service = self._service
        if service is not None and service.handle is handle:
            return service
        with self._lock:
            if self._service is None or self._service.handle is not handle:
                self._service = AtlasService(handle, self.settings)
                if self.on_open is not None:
                    self.on_open(self._service)
            return self._service
