"""The pages' templates and the feature page renderer: the code that the atlas's stored pages are made with.

The build stores every feature page in the atlas (`render_stored_pages`, run by `write_atlas`'s derive step,
found by name from pipelines/atlas/build.py), and the server serves them only when its own page code is the
code that rendered them (`page_identity`: the feature page's templates, the static files, the modules of
`PAGE_MODULES`, this one first, and `examples_shown`), so a stored page is exactly the page the server would
render. backend/html.py serves them (and renders everything else).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib
import json
from pathlib import Path
from typing import Mapping
from urllib.parse import urlencode

import jinja2.meta
import pyarrow as pa
from fastapi.templating import Jinja2Templates

import frontend
from backend import views
from backend.db import AtlasHandle
from backend.services import spectrogram
from backend.services.atlas import AtlasService
from backend.settings import DEMO_COMMAND, Settings
from pipelines.atlas.reader import AtlasReader

FRONTEND = Path(frontend.__file__).resolve().parent
TEMPLATES = FRONTEND / "templates"
STATIC = FRONTEND / "static"
HTMX = STATIC / "vendor" / "htmx.min.js"

GZIP_LEVEL = 3
"""Cached pages shrink ~5x (45 kB -> 8 kB) at a fraction of a millisecond; higher levels gain little."""
STORED_GZIP_LEVEL = 6
"""Stored pages are compressed once, at build time: 10% smaller than `GZIP_LEVEL` for twice its time."""
PAGE_MODULES = (
    "backend.rendering",
    "backend.views",
    "backend.schemas",
    "backend.services.atlas",
    "backend.services.feature_blocks",
    "backend.services.spectrogram",
)
"""The modules whose code shapes a feature page (with the templates and static files: `page_identity`)."""


def make_templates() -> Jinja2Templates:
    """The Jinja environment of every page: the server's, and the build's when it stores feature pages."""
    templates = Jinja2Templates(directory=TEMPLATES)
    env = templates.env
    env.trim_blocks = env.lstrip_blocks = True
    env.globals.update(
        demo_command=DEMO_COMMAND,
        htmx=HTMX.is_file(),
        asset_version=asset_version(),
        overlay_points=spectrogram.overlay_points,
        example_view=views.example_view,
        bar_chart=views.bar_chart,
        share_scale=views.share_scale,
        tier=views.tier,
        clip_span=views.clip_span,
        by_type=views.by_type,
        parallel_view=views.parallel_view,
        CHART=views.CHART,
    )
    env.filters.update(num=num, pct=pct, merge_query=merge_query)
    return templates


def _digest(paths: list[Path], root: Path) -> hashlib.blake2b:
    digest = hashlib.blake2b(digest_size=8)
    for path in paths:
        digest.update(f"{path.relative_to(root)}\0".encode())
        digest.update(path.read_bytes())
    return digest


@functools.cache
def asset_version() -> str:
    """Changes whenever a static file's content changes, so `?v=` URLs can be cached for good."""
    return _digest(sorted(p for p in STATIC.rglob("*") if p.is_file()), STATIC).hexdigest()[:10]


def feature_page_templates(templates: Jinja2Templates) -> list[Path]:
    """The template files a feature page is made of: feature.html and all it extends, includes or imports."""
    env, found, todo = templates.env, set(), ["feature.html"]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        source = (TEMPLATES / name).read_text()
        todo += [str(ref) for ref in jinja2.meta.find_referenced_templates(env.parse(source)) if ref]
    return sorted(TEMPLATES / name for name in found)


@functools.cache
def page_identity(examples_shown: int) -> str:
    """Id of the code that renders feature pages: a server serves stored pages only when theirs is its own.

    Made of the feature page's templates, the static files (their version is in every page), the modules
    of `PAGE_MODULES` and `examples_shown`; other templates may change freely."""
    files = [*feature_page_templates(make_templates()), *sorted(p for p in STATIC.rglob("*") if p.is_file())]
    sources = sorted({Path(str(importlib.import_module(name).__file__)).resolve() for name in PAGE_MODULES})
    digest = _digest(files, FRONTEND)
    for source in sources:
        digest.update(source.read_bytes())
    digest.update(f"examples_shown={examples_shown}".encode())
    return digest.hexdigest()


def num(value: float | None, digits: int = 3) -> str:
    """Compact significant-digit formatting for tables (monospace columns)."""
    if value is None:
        return "—"
    if float(value).is_integer() and abs(value) < 1e7:
        return f"{int(value):,}"
    return f"{value:.{digits}g}"


def pct(value: float | None, digits: int = 3) -> str:
    """A fraction as a percentage with `digits` significant digits, whole numbers never in e-notation."""
    if value is None:
        return "—"
    if value == 0:
        return "0%"
    percent = value * 100
    if abs(percent) < 1:
        return f"{percent:.{digits}g}%"
    return f"{percent:.{max(digits - len(str(int(abs(percent)))), 0)}f}%"


def merge_query(params: Mapping[str, str], **changes: object) -> str:
    """A query string: `params` with `changes` applied and empty values dropped (pagination links)."""
    merged = {**params, **{key: str(value) for key, value in changes.items()}}
    return urlencode({key: value for key, value in merged.items() if value != ""})


def page_bytes(templates: Jinja2Templates, template: str, context: dict, level: int = GZIP_LEVEL) -> bytes:
    """A page rendered for the cache: gzip-compressed, and without the request."""
    html = templates.get_template(template).render(**context)
    return gzip.compress(html.encode(), compresslevel=level, mtime=0)


def feature_page(
    templates: Jinja2Templates,
    examples_shown: int,
    atlas: AtlasService,
    feature_id: int,
    level: int = GZIP_LEVEL,
) -> bytes:
    """The cached form of /features/{feature_id} (the route, the pre-renderer and the build share it)."""
    context = {"atlas": atlas, "f": atlas.feature(feature_id), "shown": examples_shown}
    return page_bytes(templates, "feature.html", context, level)


STORE_CACHE_MB = 64
"""Block cache of the build's page renderer: it walks the features in order, so a few blocks are enough."""


def render_stored_pages(path: Path) -> dict[str, pa.Table]:
    """Every feature page of the atlas file at `path`, rendered as the server renders it: the `derive` step of
    `pipelines.atlas.writer.write_atlas` (the build finds it by name). Returns `feature_pages` and the `run`
    row `pages` that names the code that rendered them (`page_identity`)."""
    settings = Settings(atlas=path, data_dir=path.parent, cache_mb=STORE_CACHE_MB, prerender_share=0.0)
    templates = make_templates()
    with AtlasReader.open(path, settings.duckdb_memory_mb) as reader:
        build_id = str(reader.run_metadata()["build_id"])
        service = AtlasService(AtlasHandle(path=path, version=build_id, reader=reader), settings)
        ids = service.feature_ids.tolist()
        pages = [
            feature_page(templates, settings.examples_shown, service, feature_id, STORED_GZIP_LEVEL)
            for feature_id in ids
        ]
    info = {"identity": page_identity(settings.examples_shown), "examples_shown": settings.examples_shown}
    return {
        "feature_pages": pa.table(
            {"feature_id": pa.array(ids, pa.int32()), "page": pa.array(pages, pa.binary())}
        ),
        "run": pa.table({"key": ["pages"], "value": [json.dumps(info)]}),
    }
