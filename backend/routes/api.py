"""`/api/v1`: the atlas as JSON (with an OpenAPI description at /api/v1/openapi.json), plus `/healthz`.

Thin routes over `backend.services`; errors come back as `{"detail": "..."}` with a 4xx status (503 while
there is no atlas, naming the command that builds one).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from backend.deps import AtlasDep, ClipId, FeatureFilters, FeatureId, ProviderDep, Seconds, SettingsDep
from backend.errors import AtlasUnavailableError, public_message, public_path
from backend.schemas import (
    AtlasOverview,
    ClipDetail,
    ErrorDetail,
    FeatureDetail,
    FeaturePage,
    Health,
    SteeringPresets,
    Taxonomy,
)
from backend.services import audio, spectrogram

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorDetail, "description": text}
    for status, text in (
        (403, "The clip's audio lies outside the folders the server may read"),
        (404, "Unknown feature or clip id, missing audio, or an atlas without scored labels"),
        (422, "Invalid parameters"),
        (503, "No atlas yet: the detail names the command that builds it"),
    )
}

router = APIRouter(prefix="/api/v1", tags=["atlas"], responses=ERRORS)
health_router = APIRouter(tags=["health"])


def cache_headers(request: Request, version: str) -> dict[str, str]:
    """Long-lived caching for URLs pinned to this atlas version (`?v=`), revalidation otherwise."""
    if request.query_params.get("v") == version:
        return {"Cache-Control": "public, max-age=31536000, immutable"}
    return {"Cache-Control": "no-cache", "ETag": f'"{version}"'}


@health_router.get("/healthz", response_model=Health)
def healthz(provider: ProviderDep, settings: SettingsDep) -> Health:
    """Liveness, and whether an atlas is loaded (if not, the command that builds one)."""
    atlas = public_path(settings.atlas_path, settings)  # relative to the data folder: no server paths
    try:
        service = provider.current()
    except AtlasUnavailableError as exc:
        return Health(status="no_atlas", atlas=atlas, detail=public_message(str(exc), settings))
    background = provider.prerenderer
    return Health(
        status="ok",
        atlas=atlas,
        version=service.version,
        pages_cached=len(provider.pages),
        stored_pages=service.stored_pages is not None,
        prerendering=background is not None and not background.done.is_set(),
    )


@router.get("/atlas", response_model=AtlasOverview)
def atlas_overview(atlas: AtlasDep) -> AtlasOverview:
    """Model, layer, SAE configuration and metrics, corpus composition and the feature-density histogram."""
    return atlas.overview()


@router.get("/taxonomy", response_model=Taxonomy)
def taxonomy(atlas: AtlasDep) -> Taxonomy:
    """Live features per type beside a random SAE and shuffled annotations, and each type's best features."""
    return atlas.taxonomy()


@router.get("/presets", response_model=SteeringPresets)
def presets(atlas: AtlasDep) -> SteeringPresets:
    """Named steering recipes with their strength curves on training clips; POST /api/v1/steer takes
    `{"preset": id}` with an optional `strength` (default: the curve's best)."""
    return atlas.presets()


@router.get("/features", response_model=FeaturePage)
def list_features(atlas: AtlasDep, filters: FeatureFilters) -> FeaturePage:
    """Search and filter features (`type=` a feature type); dead ones are left out unless `dead=true`."""
    return atlas.list_features(filters)


@router.get("/features/{feature_id}", response_model=FeatureDetail)
def get_feature(atlas: AtlasDep, feature_id: FeatureId) -> FeatureDetail:
    """One feature: label, density, histograms, language effects, examples and related features."""
    return atlas.feature(feature_id)


@router.get("/clips/{clip_id}", response_model=ClipDetail)
def get_clip(atlas: AtlasDep, clip_id: ClipId) -> ClipDetail:
    """One clip: metadata, transcripts, aligned words and the features that have it among their examples."""
    return atlas.clip_detail(clip_id)


@router.get(
    "/clips/{clip_id}/audio",
    response_class=Response,
    responses={
        200: {"content": {"audio/flac": {}, "audio/wav": {}}, "description": "FLAC (whole) or WAV (window)"},
        206: {"content": {"audio/flac": {}}, "description": "A byte range of the FLAC"},
        416: {"description": "Byte range outside the file"},
    },
)
def get_clip_audio(
    request: Request,
    atlas: AtlasDep,
    provider: ProviderDep,
    settings: SettingsDep,
    clip_id: ClipId,
    start: Seconds = None,
    end: Seconds = None,
) -> Response:
    """The clip's FLAC with byte ranges (seekable) or, given `start`/`end` in seconds, that window as WAV."""
    clip = atlas.clip(clip_id)
    path = audio.resolve_audio(clip.audio_path, settings.allowed_audio_roots, clip_id)
    if start is None and end is None:
        return FileResponse(
            path, media_type="audio/flac", filename=f"clip-{clip_id}.flac", content_disposition_type="inline"
        )
    a, b = audio.check_window(start, end, clip.duration, settings.max_audio_window_s)
    key = ("wav", atlas.version, clip_id, round(a, 3), round(b, 3))
    body = provider.media.get_or_make(key, lambda: audio.wav_window(path, a, b, clip_id))
    return Response(body, media_type="audio/wav", headers=cache_headers(request, atlas.version))


@router.get(
    "/clips/{clip_id}/spectrogram.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "The log-mel spectrogram (viridis)"}},
)
def get_clip_spectrogram(
    request: Request,
    atlas: AtlasDep,
    provider: ProviderDep,
    clip_id: ClipId,
    start: Seconds = None,
    end: Seconds = None,
) -> Response:
    """Whisper's 80-bin log-mel of the clip (or of [start, end) seconds): 10 ms per pixel column."""

    def render() -> bytes:
        mel = atlas.mel(clip_id)
        a, b = spectrogram.mel_window(mel.mel_MT.shape[1], start, end)
        return spectrogram.render_png(mel.mel_MT[:, a:b])

    body = provider.media.get_or_make(("png", atlas.version, clip_id, start, end), render)
    return Response(body, media_type="image/png", headers=cache_headers(request, atlas.version))
