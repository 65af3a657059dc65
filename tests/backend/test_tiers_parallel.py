"""Clip tiers (words, approximate phones, the timeline by type) and the parallel-sentence card, over HTTP."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from backend.app import create_app
from pipelines.atlas.reader import AtlasReader
from pipelines.atlas.schema import FRAME_SECONDS, LABEL_TYPES
from tests.backend.conftest import settings_for
from tests.fixtures.synthetic_atlas import write_synthetic_atlas

CARD = "Same sentence, other languages"


def speech_clip(client: TestClient) -> dict:
    """The first clip with aligned words and phone intervals."""
    for clip_id in range(16):
        clip = client.get(f"/api/v1/clips/{clip_id}").json()
        if clip["words"] and clip["phones"]:
            return clip
    raise AssertionError("no clip with words and phones")


def parallel_feature(client: TestClient, min_groups: int = 1) -> dict:
    items = client.get("/api/v1/features", params={"limit": 60}).json()["items"]
    for item in items:
        detail = client.get(f"/api/v1/features/{item['id']}").json()
        if len(detail["parallel"]) >= min_groups:
            return detail
    raise AssertionError("no feature with parallel groups")


def tier_buttons(html: str, tier: str) -> list[tuple[float, float, str]]:
    """(left %, width %, label) of each interval of a tier of the clip page."""
    body = html.split(f'data-tier="{tier}"', 1)[1].split("</div>", 1)[0]
    found = re.findall(
        r'<button type="button" class="iv" style="left:([\d.]+)%;width:([\d.]+)%"[^>]*>([^<]*)</button>', body
    )
    return [(float(a), float(b), label) for a, b, label in found]


def test_clip_api_carries_phones_and_feature_types(client: TestClient) -> None:
    clip = speech_clip(client)
    phones = clip["phones"]
    assert all(p["end"] > p["start"] >= 0 and p["phone"] for p in phones)
    assert [p["start"] for p in phones] == sorted(p["start"] for p in phones)
    assert all(p["end"] <= clip["n_frames"] * FRAME_SECONDS + 1e-6 for p in phones)
    assert clip["features"] and all(f["label_type"] in LABEL_TYPES for f in clip["features"])


def test_clip_page_shows_word_and_phone_tiers_on_the_spectrogram_axis(client: TestClient) -> None:
    clip = speech_clip(client)
    html = client.get(f"/clips/{clip['id']}").text
    span = clip["n_frames"] * FRAME_SECONDS
    words = tier_buttons(html, "words")
    assert [label for _, _, label in words] == [w["word"] for w in clip["words"]]
    for (left, _, _), w in zip(words, clip["words"]):
        assert left == pytest.approx(w["start"] / span * 100, abs=0.01)
    phones = tier_buttons(html, "phones")
    assert [label for _, _, label in phones] == [p["phone"] for p in clip["phones"]]
    for (left, width, _), p in zip(phones, clip["phones"]):
        assert left == pytest.approx(p["start"] / span * 100, abs=0.01)
        assert left + width == pytest.approx(p["end"] / span * 100, abs=0.02)
    assert 'phones <span class="muted">· approximate</span>' in html
    assert "Praat-style tiers on the spectrogram" in html
    assert html.count('tabindex="0"') >= 2, "one tab stop per tier"
    assert f'data-seek="{clip["phones"][0]["start"]}"' in html


def test_clip_timeline_is_grouped_by_type(client: TestClient) -> None:
    clip = speech_clip(client)
    html = client.get(f"/clips/{clip['id']}").text
    timeline = html.split('<table class="timeline">', 1)[1].split("</table>", 1)[0]
    heads = re.findall(
        r'<tr class="type-head"><th colspan="3" scope="rowgroup"><span class="type type-([a-z-]+)"', timeline
    )
    expected = [t for t in LABEL_TYPES if any(f["label_type"] == t for f in clip["features"])]
    assert heads == expected, "one group per type present, in the taxonomy's order"
    for kind in heads:
        group = timeline.split(f'class="typed type-group-{kind}"', 1)[1].split("</tbody>", 1)[0]
        ids = [int(i) for i in re.findall(r'href="/features/(\d+)"', group)]
        in_api = [f["feature_id"] for f in clip["features"] if f["label_type"] == kind]
        assert ids == in_api, "strongest first within a type"


def test_feature_api_carries_parallel_groups_and_score(client: TestClient) -> None:
    detail = parallel_feature(client, min_groups=2)
    score = detail["cross_lingual"]
    assert 0.0 <= score <= 1.0
    groups = detail["parallel"]
    assert [g["rank"] for g in groups] == list(range(len(groups)))
    similarities = []
    for g in groups:
        versions = g["versions"]
        assert len({v["language"] for v in versions}) >= 2
        assert [v["language"] for v in versions] == sorted(v["language"] for v in versions)
        assert g["peak"] == pytest.approx(max(v["peak"] for v in versions))
        for v in versions:
            clip = client.get(f"/api/v1/clips/{v['clip_id']}").json()
            assert clip["group_key"] == g["group"] and clip["key"] == v["clip_key"]
            assert 0 < len(v["trace"]) <= 150 and max(v["trace"]) == pytest.approx(v["peak"], rel=1e-3)
            assert len(v["trace"]) * v["seconds_per_point"] >= clip["n_frames"] * FRAME_SECONDS - 1e-6
        peaks: dict[str, float] = {}
        for v in versions:
            peaks[v["language"]] = max(peaks.get(v["language"], 0.0), v["peak"])
        expected = (sum(peaks.values()) / max(peaks.values()) - 1) / (len(peaks) - 1)
        assert g["similarity"] == pytest.approx(expected)
        similarities.append(g["similarity"])
    assert score == pytest.approx(sum(similarities) / len(similarities), abs=1e-4)


def test_feature_page_shows_the_parallel_card(client: TestClient) -> None:
    detail = parallel_feature(client)
    html = client.get(f"/features/{detail['id']}").text
    assert CARD in html and f"{detail['cross_lingual']:.2f}" in html
    assert "1 = as strongly in every version, 0 = in one version only" in html
    card = html.split('id="parallel"', 1)[1].split("</section>", 1)[0]
    for g in detail["parallel"]:
        assert f'<span class="num">{g["group"]}</span>' in card
        for v in g["versions"]:
            anchor = f"par-{g['rank']}-{v['clip_id']}"
            assert f'href="/api/v1/clips/{v["clip_id"]}/audio?v=' in card
            assert f'data-figure="{anchor}"' in card and f'id="{anchor}"' in card
            assert f'href="/clips/{v["clip_id"]}"' in card
    assert card.count("<polygon points=") == sum(len(g["versions"]) for g in detail["parallel"])
    url = re.search(r'href="(/api/v1/clips/\d+/audio\?v=[^"]+)"', card)
    assert url and client.get(url.group(1)).headers["content-type"] == "audio/flac"


def test_stored_feature_pages_include_the_card(client: TestClient, atlas_path: Path) -> None:
    detail = parallel_feature(client)
    with AtlasReader.open(atlas_path) as reader:
        stored = gzip.decompress(reader.stored_pages([detail["id"]])[detail["id"]]).decode()
    assert CARD in stored and f"{detail['cross_lingual']:.2f}" in stored
    assert client.get(f"/features/{detail['id']}").text == stored


def test_features_without_parallel_groups_have_no_card(client: TestClient) -> None:
    items = client.get("/api/v1/features", params={"limit": 100}).json()["items"]
    for item in items:
        detail = client.get(f"/api/v1/features/{item['id']}").json()
        if not detail["parallel"]:
            assert detail["cross_lingual"] is None
            assert CARD not in client.get(f"/features/{item['id']}").text
            return
    pytest.skip("every listed feature has parallel groups")


def test_an_atlas_without_annotations_or_parallel_traces_renders(tmp_path: Path) -> None:
    path = write_synthetic_atlas(
        tmp_path / "atlas.duckdb", n_features=40, n_clips=6, interpretation=False, annotations=False,
        parallel=False,
    )  # fmt: skip
    with TestClient(create_app(settings_for(path))) as client:
        clip = client.get("/api/v1/clips/0").json()
        assert clip["phones"] == [] and all(f["label_type"] == "" for f in clip["features"])
        html = client.get("/clips/0").text
        assert 'data-tier="words"' in html and 'data-tier="phones"' not in html
        assert 'class="type-head"' not in html and "Features over time" in html
        for feature_id in (1, 2, 3):
            detail = client.get(f"/api/v1/features/{feature_id}").json()
            assert detail["cross_lingual"] is None and detail["parallel"] == []
            page = client.get(f"/features/{feature_id}")
            assert page.status_code == 200 and CARD not in page.text
