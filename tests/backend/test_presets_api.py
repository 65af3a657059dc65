"""Steering presets through the real app: `GET /api/v1/presets` from the atlas (the synthetic atlas carries
presets.json content as `whisper-atlas calibrate` writes it) and `POST /api/v1/steer` with `{"preset": id}`
on the tiny random Whisper."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from pipelines.steering.presets import Preset
from tests.fixtures.audio import audio_bytes, speechlike
from tests.fixtures.live_server import live_app, tiny_resources

CLIP = audio_bytes(speechlike(2.0))


def test_presets_list_their_spec_default_strength_and_curve(client) -> None:
    r = client.get("/api/v1/presets")
    assert r.status_code == 200, r.text
    body = r.json()
    ids = [p["id"] for p in body["presets"]]
    assert "suppress_hallucination" in ids and "toward_es" in ids
    for preset in body["presets"]:
        strengths = preset["curve"]["strength"]
        assert strengths[0] == 0.0 and preset["default_strength"] in strengths
        assert all(len(v) == len(strengths) for v in preset["curve"].values())
    toward = next(p for p in body["presets"] if p["id"] == "toward_es")
    assert toward["method"] == "sae" and toward["spec"]["toward_language"] == "es"
    assert next(p for p in body["presets"] if p["id"] == "suppress_hallucination")["method"] == "features"


def with_presets():
    res = tiny_resources()
    res.presets = {
        "quiet": Preset("quiet", "q", {"features": [{"id": 4, "strength": 1.0}]}, 0.25, {}, "s", 2),
        "toward_es": Preset(
            "toward_es", "es", {"toward_language": "es", "method": "random"}, 0.5, {}, "s", 2
        ),
    }
    return res


def test_steer_by_preset_uses_its_default_or_given_strength(data_root) -> None:
    with TestClient(live_app(data_root, load=with_presets)) as client:

        def steer(spec: dict):
            files = {"file": ("clip.wav", CLIP, "application/octet-stream")}
            return client.post("/api/v1/steer", files=files, data={"spec": json.dumps(spec)})

        r = steer({"preset": "quiet"})
        assert r.status_code == 200, r.text
        used = {"id": 4, "strength": 0.25, "label": "", "effect": None, "label_type": ""}
        assert r.json()["features_used"][0] == used
        r = steer({"preset": "toward_es", "strength": 0.8})
        assert r.status_code == 200, r.text
        assert r.json()["target_language"] == "es" and r.json()["method"] == "random"
        assert r.json()["features_used"][0]["strength"] == 0.8
        bad = steer({"preset": "toward_xx"})
        assert bad.status_code == 422 and "unknown preset 'toward_xx'" in bad.json()["detail"]
        assert "quiet, toward_es" in bad.json()["detail"]
        early = steer({"preset": "quiet", "colour": 1})  # refused before the upload is decoded
        assert early.status_code == 422 and "takes only" in early.json()["detail"]


def test_steering_page_shows_every_preset_with_its_curve_table(client) -> None:
    r = client.get("/steering")
    assert r.status_code == 200, r.text
    presets = client.get("/api/v1/presets").json()["presets"]
    for preset in presets:
        assert f'id="{preset["id"]}"' in r.text and f'data-preset="preset-{preset["id"]}"' in r.text
    assert "training clips" in r.text and "/static/js/curves.js" in r.text
