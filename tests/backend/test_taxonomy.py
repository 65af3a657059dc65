"""Scored labels, feature types and the taxonomy: written by the real build, read back over HTTP as JSON and
pages, and an atlas whose analysis predates them still served."""

from __future__ import annotations

import json
import math
from pathlib import Path

import duckdb
import pytest
from fastapi.testclient import TestClient

from backend.app import create_app
from backend.services.atlas import BEST_PER_TYPE
from pipelines.atlas.schema import LABEL_TYPES
from tests.backend.conftest import settings_for
from tests.fixtures.synthetic_atlas import write_synthetic_atlas


def plain(atlas: Path, sql: str, *params: object) -> list[tuple]:
    with duckdb.connect(str(atlas), read_only=True) as con:
        return con.execute(sql, list(params)).fetchall()


def written_summary(atlas: Path) -> dict:
    ((value,),) = plain(atlas, "SELECT value FROM run WHERE key = 'interpretation'")
    return json.loads(value)


def test_taxonomy_numbers_are_the_ones_written(client: TestClient, atlas_path: Path) -> None:
    taxonomy = client.get("/api/v1/taxonomy").json()
    summary = written_summary(atlas_path)
    live = dict(plain(atlas_path, "SELECT label_type, count(*) FROM features WHERE density > 0 GROUP BY 1"))
    assert list(taxonomy["counts"]) == list(LABEL_TYPES)
    assert taxonomy["counts"] == {kind: live.get(kind, 0) for kind in LABEL_TYPES} == summary["counts"]
    assert taxonomy["control_counts"] == summary["control_counts"]
    assert set(taxonomy["control_counts"]) == {"random_sae", "shuffled"}
    assert taxonomy["explained_share"] == pytest.approx(summary["explained_share"])
    for key in ("threshold", "heldout_frames", "heldout_clips", "stable_share"):
        assert taxonomy[key] == summary[key], key


def test_taxonomy_best_features_are_each_types_best(client: TestClient, atlas_path: Path) -> None:
    best = client.get("/api/v1/taxonomy").json()["best"]
    assert "unexplained" not in best and set(best) <= set(LABEL_TYPES)
    for kind, features in best.items():
        expected = plain(
            atlas_path,
            "SELECT id FROM features WHERE density > 0 AND label_type = ? "
            "ORDER BY label_score DESC, id LIMIT ?",
            kind,
            BEST_PER_TYPE,
        )
        assert [f["id"] for f in features] == [i for (i,) in expected], kind
        assert all(
            f["label_type"] == kind and f["label"] and f["label_precision"] is not None for f in features
        )


def test_type_filter_with_label_score_sort(client: TestClient, atlas_path: Path) -> None:
    page = client.get(
        "/api/v1/features", params={"type": "phonetic", "sort": "label_score", "limit": 500}
    ).json()
    ((n,),) = plain(atlas_path, "SELECT count(*) FROM features WHERE density > 0 AND label_type = 'phonetic'")
    assert page["total"] == n > 0 and len(page["items"]) == n
    assert all(item["label_type"] == "phonetic" for item in page["items"])
    scores = [item["label_score"] for item in page["items"]]
    assert scores == sorted(scores, reverse=True)
    assert client.get("/api/v1/features", params={"type": "", "limit": 1}).json()["total"] > n


def test_an_unknown_type_is_a_422_naming_the_types(client: TestClient) -> None:
    response = client.get("/api/v1/features", params={"type": "semantic"})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("type:") and "'phonetic'" in detail and "'unexplained'" in detail
    assert client.get("/features", params={"type": "semantic"}).status_code == 422


def test_feature_json_carries_the_scored_label(client: TestClient, atlas_path: Path) -> None:
    rows = plain(
        atlas_path,
        "SELECT id, label, label_score, label_type, label_precision, label_recall, language_vs_speaker, "
        "stability, runner_ups FROM features WHERE label_type = 'language' AND runner_ups <> '[]' "
        "ORDER BY id",
    )
    fid, label, score, kind, precision, recall, lvs, stability, runner_ups = rows[0]
    detail = client.get(f"/api/v1/features/{fid}").json()
    listed = client.get("/api/v1/features", params={"q": fid, "type": "language"}).json()["items"][0]
    for got in (detail, listed):
        assert got["id"] == fid
        assert (got["label"], got["label_type"]) == (label, kind)
        assert got["label_score"] == pytest.approx(score)
        assert got["label_precision"] == pytest.approx(precision)
        assert got["label_recall"] == pytest.approx(recall)
        assert got["language_vs_speaker"] == pytest.approx(lvs)
        assert got["stability"] == pytest.approx(stability)
        assert got["runner_ups"] == json.loads(runner_ups)
        assert set(got["runner_ups"][0]) == {"label", "type", "score", "precision", "recall"}
    other = plain(atlas_path, "SELECT id FROM features WHERE label_type = 'phonetic' LIMIT 1")[0][0]
    assert client.get(f"/api/v1/features/{other}").json()["language_vs_speaker"] is None  # NaN: null


def test_dead_features_are_untyped_with_nulls(client: TestClient) -> None:
    items = client.get("/api/v1/features", params={"dead": True, "sort": "density_asc", "limit": 5}).json()[
        "items"
    ]
    dead = [i for i in items if i["density"] == 0]
    if not dead:
        pytest.skip("this synthetic atlas happens to have no dead feature")
    f = client.get(f"/api/v1/features/{dead[0]['id']}").json()
    assert f["label_type"] == "" and f["runner_ups"] == []
    assert f["label_precision"] is f["stability"] is f["language_vs_speaker"] is None


def test_taxonomy_page(client: TestClient) -> None:
    taxonomy = client.get("/api/v1/taxonomy").json()
    html = client.get("/taxonomy").text
    assert "Feature taxonomy" in html and "How labels are scored" in html and "random SAE" in html
    assert 'href="/taxonomy"' in html  # the top nav
    for kind, n in taxonomy["counts"].items():
        assert f'<span class="type type-{kind}"' in html
        link = f'href="/features?type={kind}&amp;sort=label_score"'
        assert f'{link} title="list the {kind} features, best first">{n}</a>' in html
    for features in taxonomy["best"].values():
        assert f'href="/features/{features[0]["id"]}"' in html
    assert f"{taxonomy['explained_share']['sae'] * 100:.1f}%" in html


def test_feature_page_shows_what_it_detects(client: TestClient, atlas_path: Path) -> None:
    fid, lvs = plain(
        atlas_path,
        "SELECT id, language_vs_speaker FROM features WHERE label_type = 'language' AND runner_ups <> '[]' "
        "ORDER BY id LIMIT 1",
    )[0]
    detail = client.get(f"/api/v1/features/{fid}").json()
    html = client.get(f"/features/{fid}").text  # the page the build stored
    assert "What it detects" in html and '<span class="type type-language"' in html
    assert "balanced accuracy of the label as a predictor of this feature firing" in html
    assert "0.5 is chance" in html and "≥ 0.7 counts as stable" in html
    assert "next best hypotheses" in html
    for runner_up in detail["runner_ups"]:
        assert f'<span class="type type-{runner_up["type"]}"' in html
    assert ("Language explains it better" if lvs > 0 else "A single speaker explains it") in html


def test_feature_list_has_a_type_filter_and_badges(client: TestClient) -> None:
    html = client.get("/features", params={"type": "lexical", "sort": "label_score"}).text
    assert '<select name="type">' in html and "<option selected>lexical</option>" in html
    rows = html.split("<tbody>")[1]
    assert rows.count('<span class="type type-lexical"') == rows.count("<tr ") > 0


@pytest.fixture(scope="module")
def unscored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An atlas from an analysis made before labels were scored."""
    path = tmp_path_factory.mktemp("unscored") / "atlas.duckdb"
    return write_synthetic_atlas(path, n_features=40, n_clips=6, interpretation=False)


def test_an_atlas_without_scored_labels_is_still_served(unscored: Path) -> None:
    with TestClient(create_app(settings_for(unscored))) as client:
        items = client.get("/api/v1/features", params={"limit": 500}).json()["items"]
        assert items and all(i["label_type"] == "" and i["runner_ups"] == [] for i in items)
        assert all(i["label_precision"] is None and i["stability"] is None for i in items)
        assert client.get("/api/v1/features", params={"type": "phonetic"}).json()["total"] == 0
        missing = client.get("/api/v1/taxonomy")
        assert missing.status_code == 404 and "whisper-atlas analyze" in missing.json()["detail"]
        page = client.get("/taxonomy")
        assert page.status_code == 200 and "holds no scored labels" in page.text
        feature = client.get(f"/features/{items[0]['id']}").text
        assert "Top activations" in feature and "What it detects" not in feature
        assert "provisional auto label" in feature and 'class="type ' not in feature
        assert '<select name="type">' not in client.get("/features").text
        assert math.isfinite(client.get(f"/api/v1/features/{items[0]['id']}").json()["label_score"])


def test_overview_shows_the_explained_shares_and_seed_stability(client: TestClient) -> None:
    page = client.get("/").text
    assert "Explained (score" in page and "a random SAE" in page and "shuffled annotations" in page
    assert "Seed stability:" in page and "trained with the next seed" in page
