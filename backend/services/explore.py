"""Explore by example: the features of a selected span, the corpus moments most like it, the feature map.

One `ExploreService` per atlas version (`explore_service`), holding what every query needs: the features'
idf weights, types and the index settings the build recorded (`run.explore`). Spans of atlas clips are read
from their stored frame codes; an upload's span from the SAE codes the live encoder computes for it
(`span_of_latents`, run on the inference worker), kept the same way (each frame's k strongest latents) so
both are compared with the corpus alike. Search itself is `pipelines.atlas.search`.
"""

from __future__ import annotations

import json
import math
import threading
import time
import weakref
from typing import Any, Literal, cast

import numpy as np

from backend.errors import NotFoundError
from backend.schemas import FeatureMapPoints, MapPoint, SimilarMoment, SimilarMoments, Span, SpanFeature
from backend.services.atlas import AtlasService
from pipelines.analysis.frame_codes import span_sums, top_codes
from pipelines.analysis.similar import Match, SimilarConfig, feature_idf, query_vector
from pipelines.atlas.schema import FRAME_SECONDS, LABEL_TYPES, LabelType
from pipelines.atlas.search import search
from pipelines.errors import AtlasError

NO_INDEX = (
    "This atlas has no explore index (frame codes, similar moments, map): rebuild it with "
    "`whisper-atlas build`."
)
TRACE_POINTS = 64
"""Most points of a span feature's trace (longer spans take the max over runs of frames)."""
METHOD = (
    "cosine of the span's SAE codes pooled over its frames (sqrt of the summed activations times "
    "log(1/density)) with every corpus window's sketch; candidates from an inverted index by feature"
)
MAP_EXPLANATION = (
    "Each dot is a live feature, placed by UMAP (cosine) of its decoder direction: features that write "
    "similar directions into Whisper's encoder output sit close together."
)


class SpanError(AtlasError):
    """A span outside the clip or empty: 422."""

    status_code = 422


class ExploreService:
    """Span features, similar moments and the map of one atlas version."""

    def __init__(self, atlas: AtlasService) -> None:
        self.atlas = atlas
        self.info = atlas.run.get("explore")
        ids, _, density = atlas.reader.feature_index()
        self.n_features = len(ids)
        self.idf_F = feature_idf(density)
        self.config = SimilarConfig()
        """How much a query reads: this code's settings (a query does not depend on the build's windows)."""
        self.k = int(self.info["frame_codes"]["k"]) if isinstance(self.info, dict) else 0
        self._map_json: bytes | None = None
        self._types: dict[int, Literal["", LabelType]] | None = None
        self._lock = threading.Lock()

    def _require_index(self) -> None:
        if not isinstance(self.info, dict):
            raise NotFoundError(NO_INDEX)

    # -- spans ----------------------------------------------------------------------------------------------

    def clip_span(self, clip_id: int, start: float, end: float, limit: int) -> tuple[Span, np.ndarray]:
        """The features active in [start, end) s of an atlas clip, from its stored frame codes, and the span's
        summed codes (F,)."""
        self._require_index()
        clip = self.atlas.clip(clip_id)
        codes = self.atlas.reader.frame_codes(clip_id)
        if codes is None:
            raise NotFoundError(f"Clip {clip_id} has no frame codes in this atlas (it was not extracted).")
        a, b = span_frames(start, end, len(codes[0]), clip.duration)
        return self._span(codes[0][a:b], codes[1][a:b], a, b, clip_id, limit)

    def span_of_latents(
        self, latents_TF: Any, start: float | None, end: float | None, limit: int
    ) -> tuple[Span, np.ndarray]:
        """The same for an uploaded clip's dense latents (T, F), kept as the corpus's codes are."""
        self._require_index()
        if latents_TF.shape[1] != self.n_features:
            raise AtlasError(
                f"the run's SAE has {latents_TF.shape[1]} latents, its atlas {self.n_features}: "
                "rebuild the atlas"
            )
        n = int(latents_TF.shape[0])
        a, b = span_frames(
            0.0 if start is None else start, n * FRAME_SECONDS if end is None else end, n, None
        )
        features_TK, acts_TK, _, _ = top_codes(latents_TF[a:b], self.k)
        return self._span(features_TK, acts_TK.astype(np.float32), a, b, None, limit)

    def _span(
        self, features_TK: np.ndarray, acts_TK: np.ndarray, a: int, b: int, clip: int | None, limit: int
    ) -> tuple[Span, np.ndarray]:
        sums_F = span_sums(features_TK, acts_TK, self.n_features)
        total = float(sums_F.sum())
        active = np.flatnonzero(sums_F > 0)
        shown = active[np.argsort(-sums_F[active], kind="stable")][:limit]
        step = max(1, math.ceil((b - a) / TRACE_POINTS))
        types = self._feature_types()
        features = []
        for f in shown.tolist():
            trace_T = np.where(features_TK == f, acts_TK, 0.0).sum(1)
            pooled = (
                np.maximum.reduceat(trace_T, np.arange(0, len(trace_T), step)) if len(trace_T) else trace_T
            )
            features.append(
                SpanFeature(
                    id=f,
                    label=self.atlas.labels.get(f, ""),
                    label_type=types.get(f, ""),
                    activation=round(float(sums_F[f]), 4),
                    share=round(float(sums_F[f]) / total, 6) if total > 0 else 0.0,
                    peak=round(float(trace_T.max(initial=0.0)), 4),
                    frames=int((trace_T > 0).sum()),
                    trace=np.round(pooled.astype(np.float64), 3).tolist(),
                )
            )
        span = Span(
            clip_id=clip,
            start=round(a * FRAME_SECONDS, 3),
            end=round(b * FRAME_SECONDS, 3),
            start_frame=a,
            end_frame=b,
            total=round(total, 4),
            n_active=len(active),
            frames_per_point=step,
            features=features,
        )
        return span, sums_F

    # -- similar moments ------------------------------------------------------------------------------------

    def similar_to_clip(
        self, clip_id: int, start: float, end: float, limit: int, shown: int
    ) -> SimilarMoments:
        """The `limit` corpus moments most like [start, end) s of an atlas clip (its own moment left out)."""
        started = time.perf_counter()
        span, sums_F = self.clip_span(clip_id, start, end, shown)
        return self._similar(span, sums_F, limit, started, exclude_clip=clip_id)

    def similar_to_latents(
        self, latents_TF: Any, start: float | None, end: float | None, limit: int, shown: int
    ) -> SimilarMoments:
        """The same for a span of an uploaded clip (all of it without `start`/`end`)."""
        started = time.perf_counter()
        span, sums_F = self.span_of_latents(latents_TF, start, end, shown)
        return self._similar(span, sums_F, limit, started, exclude_clip=None)

    def _similar(
        self, span: Span, sums_F: np.ndarray, limit: int, started: float, exclude_clip: int | None
    ) -> SimilarMoments:
        q_F = query_vector(sums_F, self.idf_F)
        matches = search(
            self.atlas.reader, q_F, self.config, limit, exclude_clip, (span.start_frame, span.end_frame)
        )
        results = [self._moment(m) for m in matches if m.clip in self.atlas.clips]
        took = (time.perf_counter() - started) * 1000
        return SimilarMoments(query=span, results=results, method=METHOD, took_ms=round(took, 2))

    def _moment(self, m: Match) -> SimilarMoment:
        clip = self.atlas.clips[m.clip]
        start, end = round(m.start_frame * FRAME_SECONDS, 3), round(m.end_frame * FRAME_SECONDS, 3)
        return SimilarMoment(
            window_id=m.window,
            clip_id=clip.id,
            clip_key=clip.key,
            language=clip.language,
            category=clip.category,
            source=clip.source,
            licence=clip.licence,
            start=start,
            end=end,
            score=round(m.score, 4),
            words=[w for w in self.atlas.clip_words(clip.id) if w.end > start and w.start < end],
        )

    # -- the map --------------------------------------------------------------------------------------------

    def _feature_types(self) -> dict[int, Literal["", LabelType]]:
        """Feature id -> type, for the mapped (live) features."""
        if self._types is not None:
            return self._types
        table = self.atlas.reader.feature_map()
        kinds = table.column("label_type").to_pylist()
        types: dict[int, Literal["", LabelType]] = {
            int(f): cast(LabelType, kind) if kind in LABEL_TYPES else ""
            for f, kind in zip(table.column("feature_id").to_pylist(), kinds)
        }
        self._types = types
        return types

    def map_json(self) -> bytes:
        """`/api/v1/map` as JSON bytes, encoded once per version (thousands of points)."""
        self._require_index()
        with self._lock:
            if self._map_json is None:
                table = self.atlas.reader.feature_map()
                columns = {name: table.column(name).to_pylist() for name in table.column_names}
                points = [
                    MapPoint(
                        id=f,
                        x=round(x, 5),
                        y=round(y, 5),
                        label=label,
                        label_type=kind if kind in LABEL_TYPES else "",
                        top_language=language,
                        density=density,
                    )
                    for f, x, y, label, kind, language, density in zip(*columns.values())
                ]
                settings = dict(self.info.get("map", {})) if isinstance(self.info, dict) else {}
                body = FeatureMapPoints(explanation=MAP_EXPLANATION, settings=settings, points=points)
                self._map_json = json.dumps(body.model_dump(), separators=(",", ":")).encode()
            return self._map_json


def span_frames(start: float, end: float, n_frames: int, duration: float | None) -> tuple[int, int]:
    """Frames [a, b) covering [start, end) s, refused (SpanError) when empty or past the clip's end."""
    length = duration if duration is not None else n_frames * FRAME_SECONDS
    if not end > start:
        raise SpanError(f"the span must end after it starts (start {start:g} s, end {end:g} s)")
    if start >= length or end > length + FRAME_SECONDS:
        raise SpanError(f"the span [{start:g}, {end:g}) s lies outside the clip ({length:.2f} s long)")
    a = int(math.floor(start / FRAME_SECONDS + 1e-6))
    b = min(int(math.ceil(end / FRAME_SECONDS - 1e-6)), n_frames)
    if b <= a:
        raise SpanError(f"the span [{start:g}, {end:g}) s holds no encoder frame of the clip (20 ms each)")
    return a, b


_services: weakref.WeakKeyDictionary[AtlasService, ExploreService] = weakref.WeakKeyDictionary()
_services_lock = threading.Lock()


def explore_service(atlas: AtlasService) -> ExploreService:
    """The explore service of an atlas version (made on first use, dropped with the version)."""
    with _services_lock:
        service = _services.get(atlas)
        if service is None:
            service = _services[atlas] = ExploreService(atlas)
        return service
