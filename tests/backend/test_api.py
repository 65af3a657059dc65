"""The JSON API over a synthetic atlas: shapes, filters, pagination, errors."""

from __future__ import annotations

import duckdb
import pytest
from fastapi.testclient import TestClient

from pipelines.atlas.schema import SCHEMA_VERSION
from tests.backend.conftest import N_CLIPS, N_FEATURES


def live_count(atlas_path) -> int:
    with duckdb.connect(str(atlas_path), read_only=True) as con:
        return con.execute("SELECT count(*) FROM features WHERE density > 0").fetchone()[0]


def test_list_hides_dead_features_unless_asked(client: TestClient, atlas_path) -> None:
    page = client.get("/api/v1/features", params={"limit": 500}).json()
    assert page["total"] == live_count(atlas_path)
    assert all(item["density"] > 0 for item in page["items"])
    everything = client.get("/api/v1/features", params={"limit": 500, "dead": "true"}).json()
    assert everything["total"] == N_FEATURES


def test_pagination_covers_every_live_feature_once(client: TestClient) -> None:
    seen, offset = [], 0
    while True:
        page = client.get("/api/v1/features", params={"limit": 37, "offset": offset}).json()
        seen += [item["id"] for item in page["items"]]
        offset += 37
        if offset >= page["total"]:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == page["total"]


@pytest.mark.parametrize(
    ("sort", "key", "descending"),
    [
        ("density_desc", "density", True),
        ("density_asc", "density", False),
        ("label_score", "label_score", True),
        ("selectivity", "top_language_selectivity", True),
        ("max_act", "max_act", True),
    ],
)
def test_sort_orders(client: TestClient, sort: str, key: str, descending: bool) -> None:
    values = [
        item[key]
        for item in client.get("/api/v1/features", params={"sort": sort, "limit": 100}).json()["items"]
    ]
    assert values == sorted(values, reverse=descending)


def test_filters(client: TestClient) -> None:
    params = {
        "language": "es",
        "category": "speech",
        "min_density": 0.001,
        "max_density": 0.1,
        "min_score": 0.5,
    }
    items = client.get("/api/v1/features", params={**params, "limit": 500}).json()["items"]
    assert items
    for item in items:
        assert item["top_language"] == "es" and item["top_category"] == "speech"
        assert 0.001 <= item["density"] <= 0.1 and item["label_score"] >= 0.5


def test_search_by_id_puts_that_feature_first(client: TestClient) -> None:
    items = client.get("/api/v1/features", params={"q": "12"}).json()["items"]
    assert items[0]["id"] == 12


def test_search_by_label_text_is_case_insensitive(client: TestClient) -> None:
    label = client.get("/api/v1/features/2").json()["label"]
    word = label.split()[0].upper()
    items = client.get("/api/v1/features", params={"q": word, "limit": 500}).json()["items"]
    assert items and all(word.lower() in item["label"].lower() or item["id"] == 2 for item in items[:50])


def test_feature_detail(client: TestClient) -> None:
    live = client.get("/api/v1/features", params={"limit": 1, "offset": 5}).json()["items"][0]
    f = client.get(f"/api/v1/features/{live['id']}").json()
    assert f["id"] == live["id"] and f["label"] == live["label"] and f["density"] == live["density"]
    assert len(f["activation_histogram"]["edges"]) == len(f["activation_histogram"]["counts"]) + 1
    assert f["languages"] and f["categories"] and f["top_examples"]
    assert [s["act_share"] for s in f["languages"]] == sorted(
        (s["act_share"] for s in f["languages"]), reverse=True
    )
    for example in f["top_examples"] + f["quantile_examples"]:
        assert len(example["acts"]) == example["end_frame"] - example["start_frame"]
        assert example["start_frame"] <= example["peak_frame"] < example["end_frame"] or not example["acts"]
        for word in example["words"]:
            assert word["end"] > example["start"] and word["start"] < example["end"]
    assert [e["rank"] for e in f["top_examples"]] == list(range(len(f["top_examples"])))
    assert f["prev_id"] is None or f["prev_id"] < f["id"] < (f["next_id"] or N_FEATURES)


def test_dead_feature_has_no_examples(client: TestClient) -> None:
    dead = [
        i
        for i in client.get(
            "/api/v1/features", params={"dead": "true", "sort": "density_asc", "limit": 5}
        ).json()["items"]
        if i["density"] == 0
    ]
    if not dead:
        pytest.skip("this synthetic atlas happens to have no dead feature")
    f = client.get(f"/api/v1/features/{dead[0]['id']}").json()
    assert f["top_examples"] == [] and f["quantile_examples"] == []


def test_clip_detail(client: TestClient) -> None:
    clip = client.get("/api/v1/clips/0").json()
    assert clip["id"] == 0 and clip["duration"] > 0 and clip["key"]
    assert clip["features"]
    peaks = [f["peak_act"] for f in clip["features"]]
    assert peaks == sorted(peaks, reverse=True)
    assert len({f["feature_id"] for f in clip["features"]}) == len(clip["features"])


def test_atlas_overview(client: TestClient) -> None:
    overview = client.get("/api/v1/atlas").json()
    assert overview["n_features"] == N_FEATURES and overview["n_clips"] == N_CLIPS
    assert sum(c["clips"] for c in overview["categories"]) == N_CLIPS
    assert overview["run"]["schema_version"] == SCHEMA_VERSION and overview["density_histogram"]


@pytest.mark.parametrize(
    "url",
    [
        f"/api/v1/features/{N_FEATURES}",
        "/api/v1/features/2147483647",
        f"/api/v1/clips/{N_CLIPS}",
        "/api/v1/nothing",
    ],
)
def test_unknown_ids_are_404_with_a_detail(client: TestClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 404
    assert isinstance(response.json()["detail"], str) and response.json()["detail"]


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/features/abc",
        "/api/v1/features/-1",
        "/api/v1/features/99999999999999999999",
        "/api/v1/features?limit=0",
        "/api/v1/features?limit=100000",
        "/api/v1/features?offset=-1",
        "/api/v1/features?sort=drop%20table",
        "/api/v1/features?type=semantic",
        "/api/v1/features?min_density=nan",
        "/api/v1/features?max_density=inf",
        "/api/v1/features?min_density=2",
        "/api/v1/features?q=" + "x" * 300,
        "/api/v1/clips/0/audio?start=-1",
        "/api/v1/clips/0/audio?start=",
        "/api/v1/clips/0/spectrogram.png?start=&end=1",
        "/api/v1/clips/0/spectrogram.png?end=nan",
    ],
)
def test_bad_parameters_are_422_with_a_one_line_detail(client: TestClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"


def test_openapi_documents_the_api(client: TestClient) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    paths = set(spec["paths"])
    assert {
        "/api/v1/features",
        "/api/v1/features/{feature_id}",
        "/api/v1/taxonomy",
        "/api/v1/clips/{clip_id}",
        "/api/v1/clips/{clip_id}/audio",
        "/api/v1/clips/{clip_id}/spectrogram.png",
        "/healthz",
    } <= paths
    assert not any(p.startswith("/features") for p in paths), "HTML pages stay out of the API description"
