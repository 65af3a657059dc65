"""The HTML pages: content, htmx partials, escaping of hostile text, no-atlas mode and atlas swaps."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from backend.app import create_app
from backend.services.provider import feature_key
from pipelines.atlas.reader import AtlasReader
from tests.backend.conftest import HOSTILE_KEY, N_FEATURES, XSS, copy_atlas, set_cell, settings_for
from tests.fixtures.synthetic_atlas import write_synthetic_atlas


def first_live(client: TestClient) -> dict:
    return client.get("/api/v1/features", params={"limit": 1, "offset": 3}).json()["items"][0]


def test_overview(client: TestClient) -> None:
    html = client.get("/").text
    assert "Sparse autoencoder" in html and "Feature density" in html and "Corpus" in html
    assert 'href="/features/random"' in html and 'href="/live"' in html
    assert "<svg" in html


def test_overview_shows_fidelity_on_new_voices(client: TestClient) -> None:
    html = client.get("/").text
    assert "Fidelity on new audio" in html and "new voices, new sentences" in html
    assert "known voices, new sentences" in html and "speaker recordings" in html
    assert "cs: fillets-cs-sailor" in html and "en has one speaker only" in html


def test_feature_page_shows_everything(client: TestClient) -> None:
    f = first_live(client)
    response = client.get(f"/features/{f['id']}")
    assert response.status_code == 200
    html = response.text
    detail = client.get(f"/api/v1/features/{f['id']}").json()
    for text in (
        "Activation histogram",
        "Languages",
        "Categories",
        "Language effects",
        "Similar features",
        "Co-active features",
        "Top activations",
        "Quantile samples",
        f"/live?feature={f['id']}",
    ):
        assert text in html
    first = detail["top_examples"][0]
    assert f"/api/v1/clips/{first['clip_id']}/spectrogram.png?start={first['start']:.2f}" in html
    assert f"/api/v1/clips/{first['clip_id']}/audio?start={first['start']:.2f}" in html
    assert f'href="/clips/{first["clip_id"]}' in html
    for neighbour in detail["neighbours"][:3]:
        assert f'href="/features/{neighbour["id"]}"' in html
    assert html.count('class="ex"') <= len(detail["top_examples"]) + len(detail["quantile_examples"])


def test_feature_page_is_served_as_stored_and_gzipped(client: TestClient, atlas_path: Path) -> None:
    f = first_live(client)
    plain = client.get(f"/features/{f['id']}", headers={"Accept-Encoding": "identity"})
    zipped = client.get(f"/features/{f['id']}", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in plain.headers and zipped.headers["content-encoding"] == "gzip"
    assert zipped.text == plain.text  # httpx decodes the gzip body
    with AtlasReader.open(atlas_path) as reader:
        stored = reader.stored_pages([f["id"]])[f["id"]]
    assert gzip.decompress(stored).decode() == plain.text
    assert client.get("/healthz").json()["stored_pages"] is True
    provider = client.app.state.atlas
    assert len(provider.pages) == 0 and len(provider.current()._blocks) == 0  # nothing kept, nothing read


def test_feature_page_is_cached_and_gzipped_when_not_stored(atlas_path: Path) -> None:
    with TestClient(create_app(settings_for(atlas_path, stored_pages=False))) as client:
        f = first_live(client)
        plain = client.get(f"/features/{f['id']}", headers={"Accept-Encoding": "identity"})
        zipped = client.get(f"/features/{f['id']}", headers={"Accept-Encoding": "gzip"})
        assert "content-encoding" not in plain.headers and zipped.headers["content-encoding"] == "gzip"
        assert zipped.text == plain.text
        provider = client.app.state.atlas
        cached = provider.pages.get(feature_key(provider.current().version, f["id"]))
        assert gzip.decompress(cached).decode() == plain.text
        assert client.get("/healthz").json()["stored_pages"] is False


def test_stored_pages_are_the_pages_the_server_renders(atlas_path: Path) -> None:
    ids = [0, 1, 3, 64, 65, N_FEATURES - 1]  # across blocks, first and last
    with TestClient(create_app(settings_for(atlas_path))) as stored:
        every = stored.get("/api/v1/features", params={"dead": True, "limit": 500}).json()["items"]
        ids += [f["id"] for f in every if f["density"] == 0][:1]  # a dead feature's page too
        pages = {i: stored.get(f"/features/{i}").text for i in ids}
    with TestClient(create_app(settings_for(atlas_path, stored_pages=False))) as rendered:
        for i in ids:
            assert rendered.get(f"/features/{i}").text == pages[i], i


@pytest.mark.parametrize("stored_pages", [True, False])
def test_cached_page_fast_path_matches_the_route(atlas_path: Path, stored_pages: bool) -> None:
    with TestClient(create_app(settings_for(atlas_path, stored_pages=stored_pages))) as client:
        f = first_live(client)
        url = f"/features/{f['id'] + 1}"
        by_route = client.get(url, headers={"Accept-Encoding": "gzip"})  # not stored: rendered and cached
        by_middleware = client.get(url, headers={"Accept-Encoding": "gzip"})
        by_route_plain = client.get(url, headers={"Accept-Encoding": "identity"})  # always the route
        assert by_route.status_code == by_middleware.status_code == by_route_plain.status_code == 200
        assert by_route.content == by_middleware.content and by_route_plain.text == by_middleware.text
        for name in (
            "content-type",
            "content-encoding",
            "vary",
            "content-security-policy",
            "x-content-type-options",
        ):
            assert by_route.headers[name] == by_middleware.headers[name], name


def test_stored_pages_of_other_page_code_are_not_served(atlas_path: Path) -> None:
    app = create_app(settings_for(atlas_path))
    app.state.atlas.page_identity = "other page code"  # as after a template edit since the build
    with TestClient(app) as client:
        assert client.get("/healthz").json()["stored_pages"] is False
        html = client.get("/features/3").text
        assert "Top activations" in html and len(app.state.atlas.pages) == 1  # rendered here, cached


def test_an_atlas_without_stored_pages_is_rendered_on_request(tmp_path: Path) -> None:
    path = write_synthetic_atlas(tmp_path / "atlas.duckdb", n_features=40, n_clips=6, pages=False)
    with TestClient(create_app(settings_for(path))) as client:
        assert client.get("/healthz").json()["stored_pages"] is False
        assert "Top activations" in client.get("/features/3").text


def test_more_examples_partial(client: TestClient) -> None:
    f = first_live(client)
    n_top = len(client.get(f"/api/v1/features/{f['id']}").json()["top_examples"])
    partial = client.get(f"/features/{f['id']}/examples", params={"kind": "top", "offset": 2}).text
    assert "<html" not in partial and partial.count('class="ex"') == n_top - 2


def test_prev_next_links_skip_dead_features(client: TestClient) -> None:
    ids = [i["id"] for i in client.get("/api/v1/features", params={"limit": 500}).json()["items"]]
    html = client.get(f"/features/{ids[5]}").text
    assert f'rel="prev" href="/features/{ids[4]}"' in html and f'rel="next" href="/features/{ids[6]}"' in html


def test_feature_list_full_page_and_htmx_partial(client: TestClient) -> None:
    full = client.get("/features", params={"sort": "density_desc"}).text
    assert "<html" in full and 'id="filters"' in full and 'id="results"' in full
    partial = client.get("/features", params={"offset": 50}, headers={"HX-Request": "true"}).text
    assert "<html" not in partial and "51–100 of" in partial
    assert 'rel="prev"' in partial and "offset=0" in partial


def test_feature_list_accepts_blank_form_fields(client: TestClient) -> None:
    response = client.get(
        "/features?q=&language=&category=&min_density=&max_density=&min_score=&min_selectivity="
    )
    assert response.status_code == 200


def test_random_redirects_to_a_live_feature(client: TestClient) -> None:
    response = client.get("/features/random", follow_redirects=False)
    assert response.status_code == 303
    feature_id = int(response.headers["location"].rsplit("/", 1)[1])
    assert client.get(f"/api/v1/features/{feature_id}").json()["density"] > 0


def test_clip_page(client: TestClient) -> None:
    clip = client.get("/api/v1/clips/0").json()
    html = client.get("/clips/0").text
    assert 'src="/api/v1/clips/0/audio?v=' in html and "/api/v1/clips/0/spectrogram.png" in html
    assert "Features over time" in html
    assert f'href="/features/{clip["features"][0]["feature_id"]}"' in html


def test_unknown_pages_are_html_404s(client: TestClient) -> None:
    for url in (f"/features/{N_FEATURES + 5}", "/clips/9999", "/nowhere"):
        response = client.get(url)
        assert response.status_code == 404 and "text/html" in response.headers["content-type"]
    assert client.get("/features/abc").status_code == 422


def test_hostile_text_is_escaped(hostile_client: TestClient) -> None:
    pages = [hostile_client.get(url).text for url in ("/features/1", "/clips/0", "/features?q=script", "/")]
    pages.append(hostile_client.get("/features", params={"q": XSS}).text)
    for html in pages:
        assert "<script>alert" not in html
        assert "<img src=x" not in html and "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(" in pages[0]
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[1]
    json = hostile_client.get("/api/v1/features/1").json()
    assert json["label"] == XSS  # the API returns data as stored; escaping is the page's job
    assert hostile_client.get("/api/v1/clips/0").json()["key"] == HOSTILE_KEY


def test_pages_send_a_content_security_policy(client: TestClient) -> None:
    csp = client.get("/").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]


def test_no_atlas_pages_name_the_build_command(tmp_path: Path) -> None:
    with TestClient(create_app(settings_for(tmp_path / "missing.duckdb"))) as client:
        health = client.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "no_atlas"
        assert "make demo" in health.json()["detail"]
        for url in ("/", "/features", "/features/3", "/clips/1"):
            response = client.get(url)
            assert response.status_code == 503 and "make demo" in response.text and "<html" in response.text
        api = client.get("/api/v1/features")
        assert api.status_code == 503 and "make demo" in api.json()["detail"]
        assert client.get("/static/css/atlas.css").status_code == 200


def test_swapped_atlas_is_picked_up_without_restart(atlas_path: Path, tmp_path: Path) -> None:
    live = tmp_path / "atlas.duckdb"
    copy_atlas(atlas_path, live, lambda tables: None)
    with TestClient(create_app(settings_for(live))) as client:
        before = client.get("/api/v1/features/7").json()["label"]
        page_before = client.get("/features/7").text
        assert client.get("/healthz").json()["status"] == "ok"

        def relabel(tables: dict[str, pa.Table]) -> None:
            tables["features"] = set_cell(tables["features"], "label", 7, "freshly rebuilt label")

        copy_atlas(atlas_path, live, relabel)  # write_atlas builds beside it and os.replace()s it in
        assert before != "freshly rebuilt label"
        assert client.get("/api/v1/features/7").json()["label"] == "freshly rebuilt label"
        page_after = client.get("/features/7").text
        assert "freshly rebuilt label" in page_after and page_after != page_before


def test_static_assets_and_vendored_htmx(client: TestClient) -> None:
    html = client.get("/").text
    for src in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
        assert client.get(src).status_code == 200, src


def test_background_prerendering_fills_the_page_cache(atlas_path: Path) -> None:
    settings = settings_for(atlas_path, prerender_share=1.0, stored_pages=False)
    with TestClient(create_app(settings)) as client:
        provider = client.app.state.atlas
        version = provider.current().version
        assert provider.prerenderer is not None and provider.prerenderer.done.wait(timeout=120)
        health = client.get("/healthz").json()
        assert health["pages_cached"] >= N_FEATURES and not health["prerendering"]
        cached = gzip.decompress(provider.pages.get(feature_key(version, 5))).decode()
        assert client.get("/features/5", headers={"Accept-Encoding": "identity"}).text == cached


def test_no_prerendering_when_pages_are_stored(atlas_path: Path) -> None:
    with TestClient(create_app(settings_for(atlas_path, prerender_share=1.0))) as client:
        assert client.app.state.atlas.prerenderer is None
        assert client.get("/healthz").json()["prerendering"] is False
