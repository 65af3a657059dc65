"""Explore by example through the real app over HTTP: a span's features, similar moments (of an atlas clip and
of an upload on the tiny live model), the map, and the 4xx for bad spans, ids and limits. The synthetic atlas
is written by the real build (its frame codes, window index and map included)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import schemathesis
from fastapi.testclient import TestClient

from backend.app import create_app
from pipelines.analysis.frame_codes import span_sums
from pipelines.atlas.reader import AtlasReader
from pipelines.atlas.schema import FRAME_SECONDS
from tests.backend.conftest import settings_for
from tests.fixtures.audio import audio_bytes, speechlike
from tests.fixtures.live_server import live_app
from tests.fixtures.schemathesis_checks import check_operation
from tests.fixtures.synthetic_atlas import write_synthetic_atlas


def test_span_lists_the_features_of_the_stored_codes_by_share(client: TestClient, atlas_path: Path) -> None:
    body = client.get("/api/v1/clips/2/span", params={"start": 0.31, "end": 1.05, "features": 200}).json()
    assert (body["start_frame"], body["end_frame"]) == (15, 53)  # 20 ms frames covering the span
    assert body["start"] == pytest.approx(15 * FRAME_SECONDS) and body["end"] == pytest.approx(
        53 * FRAME_SECONDS
    )
    with AtlasReader.open(atlas_path) as reader:
        features_TK, acts_TK = reader.frame_codes(2)
        n_features = len(reader.feature_index()[0])
    sums_F = span_sums(features_TK[15:53], acts_TK[15:53], n_features)
    listed = body["features"]
    assert [f["id"] for f in listed] == sorted(np.flatnonzero(sums_F).tolist(), key=lambda f: (-sums_F[f], f))
    assert body["n_active"] == len(listed) and body["total"] == pytest.approx(sums_F.sum(), rel=1e-5)
    for f in listed:
        assert f["activation"] == pytest.approx(sums_F[f["id"]], rel=1e-4, abs=1e-4)
        assert f["share"] == pytest.approx(sums_F[f["id"]] / sums_F.sum(), abs=1e-6)
        assert (
            f["label_type"]
            and len(f["trace"]) == 38
            and max(f["trace"]) == pytest.approx(f["peak"], rel=1e-3)
        )
    whole = client.get(
        "/api/v1/clips/2/span", params={"start": 0, "end": len(features_TK) * FRAME_SECONDS}
    ).json()
    assert whole["frames_per_point"] == -(-len(features_TK) // 64)  # long spans: traces of at most 64 points
    assert all(len(f["trace"]) <= 64 for f in whole["features"])


def test_similar_moments_are_other_clips_best_windows_by_score(client: TestClient) -> None:
    body = client.get("/api/v1/similar", params={"clip": 0, "start": 0.32, "end": 0.96, "limit": 6}).json()
    results = body["results"]
    assert 0 < len(results) <= 6 and body["query"]["clip_id"] == 0 and body["took_ms"] >= 0
    assert len({m["clip_id"] for m in results}) == len(results)  # one window per clip
    scores = [m["score"] for m in results]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 + 1e-6 for s in scores)
    for m in results:
        assert not (m["clip_id"] == 0 and m["start"] < 0.96 and m["end"] > 0.32), "the query itself"
        assert all(w["end"] > m["start"] and w["start"] < m["end"] for w in m["words"])
        audio = client.get(
            f"/api/v1/clips/{m['clip_id']}/audio", params={"start": m["start"], "end": m["end"]}
        )
        assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"


def test_the_map_has_one_point_per_live_feature(client: TestClient) -> None:
    r = client.get("/api/v1/map")
    points = r.json()["points"]
    live = [f["id"] for f in client.get("/api/v1/features", params={"limit": 500}).json()["items"]]
    assert sorted(p["id"] for p in points) == sorted(live)
    assert all(0 <= p["x"] <= 1 and 0 <= p["y"] <= 1 for p in points)
    assert client.get("/api/v1/map", headers={"If-None-Match": r.headers["etag"]}).status_code == 304


@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        ("/api/v1/clips/0/span", {"start": 1.0, "end": 0.5}, 422, "end after it starts"),
        ("/api/v1/clips/0/span", {"start": 50, "end": 60}, 422, "outside the clip"),
        ("/api/v1/clips/0/span", {"start": 0.5}, 422, "end"),
        ("/api/v1/clips/0/span", {"start": "soon", "end": 1}, 422, "start"),
        ("/api/v1/clips/0/span", {"start": 0, "end": "inf"}, 422, "end"),
        ("/api/v1/clips/0/span", {"start": 0, "end": 1, "features": 0}, 422, "features"),
        ("/api/v1/clips/9999/span", {"start": 0, "end": 1}, 404, "No clip 9999"),
        ("/api/v1/similar", {"clip": 9999, "start": 0, "end": 1}, 404, "No clip 9999"),
        ("/api/v1/similar", {"clip": 0, "start": 0, "end": 1, "limit": 0}, 422, "limit"),
        ("/api/v1/similar", {"clip": 0, "start": 0, "end": 1, "limit": 51}, 422, "limit"),
        ("/api/v1/similar", {"clip": -1, "start": 0, "end": 1}, 422, "clip"),
        ("/api/v1/similar", {"start": 0, "end": 1}, 422, "clip"),
    ],
)
def test_bad_spans_ids_and_limits_get_a_clear_4xx(
    client: TestClient, path: str, params: dict, status: int, message: str
) -> None:
    r = client.get(path, params=params)
    assert r.status_code == status and message in r.json()["detail"]


def test_an_atlas_built_without_the_index_says_to_rebuild(tmp_path: Path) -> None:
    atlas = write_synthetic_atlas(tmp_path / "atlas.duckdb", 60, 4, explore=False, pages=False)
    with TestClient(create_app(settings_for(atlas))) as c:
        for path in (
            "/api/v1/map",
            "/api/v1/clips/0/span?start=0&end=0.5",
            "/api/v1/similar?clip=0&start=0&end=1",
        ):
            r = c.get(path)
            assert r.status_code == 404 and "whisper-atlas build" in r.json()["detail"]
        assert c.get("/map").status_code == 200  # the page says so itself (map.js reads the 404)


@pytest.fixture
def live_client(data_root: Path):
    """The live app over an atlas of the tiny SAE's width (96 latents), as a run's own atlas."""
    write_synthetic_atlas(data_root / "runs" / "default" / "atlas.duckdb", 96, 12, pages=False)
    with TestClient(live_app(data_root)) as c:
        yield c


def post(client: TestClient, data: bytes, **fields: object):
    form = {name: str(value) for name, value in fields.items()}
    return client.post(
        "/api/v1/similar", files={"file": ("clip.wav", data, "application/octet-stream")}, data=form
    )


def test_an_uploaded_span_finds_similar_moments(live_client: TestClient) -> None:
    clip = audio_bytes(speechlike(2.0))
    body = post(live_client, clip, start=0.2, end=1.0, limit=4).json()
    assert body["filename"] == "clip.wav" and body["duration"] == pytest.approx(2.0, abs=0.01)
    assert body["query"]["clip_id"] is None and (
        body["query"]["start_frame"],
        body["query"]["end_frame"],
    ) == (10, 50)
    assert body["query"]["features"] and 0 < len(body["results"]) <= 4
    scores = [m["score"] for m in body["results"]]
    assert scores == sorted(scores, reverse=True)
    whole = post(live_client, clip).json()["query"]  # no span: the whole clip
    assert (whole["start_frame"], whole["end_frame"]) == (0, 100)


def test_bad_upload_spans_are_refused_before_any_audio_work(live_client: TestClient) -> None:
    clip = audio_bytes(speechlike(1.0))
    cases = [
        ({"start": 1.0, "end": 0.5}, 422, "end after it starts"),
        ({"start": "soon"}, 422, "start must be a number"),
        ({"end": "nan"}, 422, "end must be between"),
        ({"limit": 0}, 422, "limit"),
        ({"start": 5, "end": 6}, 422, "outside the clip"),
    ]
    for fields, status, message in cases:
        r = post(live_client, clip, **fields)
        assert r.status_code == status and message in r.json()["detail"], (fields, r.text)
    r = post(live_client, b"not audio at all" * 100)
    assert r.status_code == 415


def test_pages_offer_span_selection_the_map_and_lists(client: TestClient) -> None:
    clip = client.get("/clips/0").text
    assert 'data-span-clip="0"' in clip and 'data-end="' in clip and "span.js" in clip
    feature = client.get("/features/5").text
    assert (
        'data-map-mini="5"' in feature and 'data-save-feature="5"' in feature and "data-span-clip" in feature
    )
    assert 'id="map-canvas"' in client.get("/map").text and "map.js" in client.get("/map").text
    assert 'id="lists-page"' in client.get("/lists").text


EXPLORE_GETS = ("GET /api/v1/clips/{clip_id}/span", "GET /api/v1/similar", "GET /api/v1/map")


@pytest.mark.parametrize("label", EXPLORE_GETS)
@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=str)
def test_schema_generated_requests_get_no_server_error(atlas_path: Path, label: str, mode) -> None:
    """Schemathesis over the documented explore operations: never a 5xx, always a documented answer."""
    app = create_app(settings_for(atlas_path))
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app).include(tag="explore")
    operations = {result.ok().label: result.ok() for result in schema.get_all_operations()}
    assert set(EXPLORE_GETS) | {"POST /api/v1/similar"} == set(operations)
    if label == "GET /api/v1/map" and mode == schemathesis.GenerationMode.NEGATIVE:
        pytest.skip("the map takes no parameters to get wrong")
    check_operation(operations[label], mode, 30)
