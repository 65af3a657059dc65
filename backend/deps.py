"""Dependencies as `Annotated` aliases (the full-stack FastAPI template's `api/deps.py`): routes stay thin."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Path, Query, Request
from pydantic import BeforeValidator, Field

from backend.html import MAX_ID
from backend.services.atlas import AtlasService
from backend.services.provider import AtlasProvider
from backend.settings import Settings
from pipelines.atlas.reader import FeatureFilter, SortKey
from pipelines.atlas.schema import LabelType


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_atlas(request: Request) -> AtlasService:
    """The service of the atlas file as it is now (a 503 naming the build command when there is none).

    Async on purpose: it is a `stat` and a dictionary lookup, not worth a thread-pool hop per request.
    """
    return request.app.state.atlas.current()


async def get_provider(request: Request) -> AtlasProvider:
    """The atlas provider: the current version's page and media caches."""
    return request.app.state.atlas


def _blank_to(default: float) -> BeforeValidator:
    """HTML forms send empty fields as ''; read them as the bound that filters nothing."""
    return BeforeValidator(lambda value: default if value == "" else value)


SettingsDep = Annotated[Settings, Depends(get_settings)]
AtlasDep = Annotated[AtlasService, Depends(get_atlas)]
ProviderDep = Annotated[AtlasProvider, Depends(get_provider)]
FeatureId = Annotated[int, Path(ge=0, le=MAX_ID, description="feature index in the SAE")]
ClipId = Annotated[int, Path(ge=0, le=MAX_ID, description="clip row id in the atlas")]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
"""0 to 1; the bound sits on the inner type so that OpenAPI shows it beside the blank-field validator."""
Ratio = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]
Blank = Literal[""]
"""An empty form field, documented in OpenAPI; `_blank_to` turns it into the bound before validation."""
Seconds = Annotated[
    Annotated[float, Field(ge=0, le=86400, allow_inf_nan=False)] | None,
    Query(description="seconds from the clip's start"),
]
"""Set by links and scripts, never by a form field: an empty value is an error like any other non-number."""


async def feature_filters(
    q: Annotated[
        str, Query(max_length=200, description="feature id, or text in the label or top words")
    ] = "",
    language: Annotated[str, Query(max_length=32, description="top language (e.g. `en`)")] = "",
    category: Annotated[str, Query(max_length=32, description="top category (e.g. `speech`, `music`)")] = "",
    label_type: Annotated[
        Literal["", LabelType], Query(alias="type", description="feature type of the label, '' for any")
    ] = "",
    min_density: Annotated[Fraction | Blank, _blank_to(0.0), Query(description="fraction of frames")] = 0.0,
    max_density: Annotated[Fraction | Blank, _blank_to(1.0), Query(description="fraction of frames")] = 1.0,
    min_score: Annotated[Fraction | Blank, _blank_to(0.0), Query(description="label score")] = 0.0,
    min_selectivity: Annotated[
        Ratio | Blank, _blank_to(0.0), Query(description="top language's selectivity")
    ] = 0.0,
    dead: Annotated[bool, Query(description="include dead features (density 0)")] = False,
    sort: SortKey = "id",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> FeatureFilter:
    return FeatureFilter(
        q=q,
        language=language,
        category=category,
        label_type=label_type,
        min_density=float(min_density),  # `_blank_to` has already replaced ''
        max_density=float(max_density),  # `_blank_to` has already replaced ''
        min_score=float(min_score),  # `_blank_to` has already replaced ''
        min_selectivity=float(min_selectivity),  # `_blank_to` has already replaced ''
        include_dead=dead,
        sort=sort,
        limit=limit,
        offset=offset,
    )


FeatureFilters = Annotated[FeatureFilter, Depends(feature_filters)]
