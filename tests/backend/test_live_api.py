"""Live analysis and steering through the real app: `/api/v1/analyze`, `/api/v1/steer`, the `/live` page and
its htmx partials, bad uploads, and the bounded worker (503 when full, 504 on timeout, gone clients dropped).
Tiny random Whisper + a small random SAE; real audio decoding; real uvicorn where concurrency matters."""

from __future__ import annotations

import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from backend.services.inference import InferenceSettings
from backend.services.uploads import UploadLimits
from tests.fixtures.audio import audio_bytes, speechlike
from tests.fixtures.live_server import LiveServer, live_app, tiny_resources

CLIP = audio_bytes(speechlike(2.0))


@pytest.fixture
def client(data_root):
    with TestClient(live_app(data_root, limits=UploadLimits(max_bytes=2 * 2**20))) as c:
        yield c


def post(client, path: str, data: bytes = CLIP, name: str = "clip.wav", spec: dict | str | None = None):
    fields = {} if spec is None else {"spec": spec if isinstance(spec, str) else json.dumps(spec)}
    return client.post(path, files={"file": (name, data, "application/octet-stream")}, data=fields)


# --- JSON API ------------------------------------------------------------------------------------------


def test_analyze_returns_transcript_languages_spectrogram_and_timeline(client) -> None:
    r = post(client, "/api/v1/analyze")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["duration"] == pytest.approx(2.0) and body["truncated"] is False
    assert isinstance(body["text"], str) and body["language"] in body["language_probs"]
    assert len(body["language_probs"]) == 8 and sum(body["language_probs"].values()) <= 1.0001
    assert body["n_frames"] == 100 and len(body["frames"]) == 100
    assert all(len(f["features"]) <= 5 and all(a > 0 for _, a in f["features"]) for f in body["frames"])
    rows = body["timeline"]
    assert 1 <= len(rows["features"]) <= 16 and len(rows["acts"]) == len(rows["features"])
    assert all(len(row) == 100 for row in rows["acts"])
    assert rows["features"][0]["label"] in ("", f"tiny feature {rows['features'][0]['id']}")
    for key in ("spectrogram", "timeline_png"):
        assert body[key].startswith("data:image/png;base64,")


def test_steer_returns_baseline_reconstructed_and_steered(client) -> None:
    zero = post(client, "/api/v1/steer", spec={"features": [{"id": 5, "strength": 0}]})
    assert zero.status_code == 200, zero.text
    body = zero.json()
    steered, baseline = body["steered"], body["baseline"]
    assert steered["text"] == baseline["text"] and steered["language"] == baseline["language"]  # strength 0
    assert steered["language_probs"] == pytest.approx(baseline["language_probs"], abs=2e-4)

    assert body["diff"] == (
        [{"op": "equal", "text": body["baseline"]["text"]}] if body["baseline"]["text"] else []
    )
    strong = post(
        client, "/api/v1/steer", spec={"features": [{"id": 5, "strength": 3}], "mode": "add"}
    ).json()
    used = {"id": 5, "strength": 3, "label": "", "effect": None, "label_type": ""}
    assert strong["features_used"] == [used]
    assert strong["steered"]["language_probs"] != strong["baseline"]["language_probs"]
    assert strong["baseline"] == body["baseline"] and strong["reconstructed"] == body["reconstructed"]
    assert set(strong["baseline"]) == {
        *("text", "language", "language_probs", "repetitive"),
        *("no_speech_prob", "avg_logprob", "temperature", "no_speech_gated"),
    }
    for name in ("reconstructed", "steered"):
        assert set(strong[name]) == set(strong["baseline"]) | {"measures"}
        assert_measures(strong[name], strong["baseline"], target=None)
    unchanged = body["steered"]["measures"]  # strength 0: the baseline's own text
    assert unchanged["cer_vs_baseline"] == 0.0 and unchanged["token_flipped"] is False


MEASURE_TYPES = {
    "text_language": str,
    "text_language_probability": float,
    "degenerate": bool,
    "cer_vs_baseline": float,
    "length_ratio": float,
    "token_flipped": bool,
}


def assert_measures(transcript: dict, baseline: dict, target: str | None) -> None:
    """A transcript's `measures` (backend.schemas.TranscriptMeasures): every field present and typed."""
    m = transcript["measures"]
    assert set(m) == {*MEASURE_TYPES, "target", "target_probability", "succeeded_toward_target"}
    for key, kind in MEASURE_TYPES.items():
        assert isinstance(m[key], kind if kind is not float else (int, float)), key
    assert 0.0 <= m["text_language_probability"] <= 1.0 and (m["text_language"] != "") == (
        m["text_language_probability"] > 0
    )
    assert m["cer_vs_baseline"] >= 0 and m["length_ratio"] >= 0
    assert m["token_flipped"] == (transcript["language"] != baseline["language"])
    assert m["target"] == target
    if target is None:
        assert m["succeeded_toward_target"] is None and m["target_probability"] is None
    else:
        expected = m["text_language"] == target and not m["degenerate"]
        assert m["succeeded_toward_target"] is expected and 0.0 <= m["target_probability"] <= 1.0


def test_steer_toward_a_language_without_an_atlas_ranks_features_on_the_clip(client) -> None:
    r = post(
        client, "/api/v1/steer", spec={"toward_language": "es", "source_language": "en", "n_features": 4}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["selection"] == "clip" and body["target_language"] == "es" and body["source_language"] == "en"
    assert 1 <= len(body["features_used"]) <= 4 and all(f["effect"] > 0 for f in body["features_used"])
    for name in ("reconstructed", "steered"):
        assert_measures(body[name], body["baseline"], target="es")


def test_a_browser_recording_in_webm_opus_is_accepted(client) -> None:
    r = post(client, "/api/v1/analyze", audio_bytes(speechlike(1.5), "webm"), "recording.webm")
    assert r.status_code == 200, r.text
    assert r.json()["duration"] == pytest.approx(1.5, abs=0.05)


def test_clips_past_30_s_are_cut_and_say_so(client) -> None:
    long = audio_bytes(np.tile(speechlike(5.0), 7), "flac")  # 35 s
    body = post(client, "/api/v1/analyze", long, "long.flac").json()
    assert body["truncated"] is True and body["duration"] == pytest.approx(30.0)
    assert body["n_frames"] == 1500


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "data, name, status, message",
    [
        (b"", "empty.wav", 400, "empty"),
        (CLIP[: len(CLIP) // 2], "cut.wav", 422, "truncated"),
        (b"just some text, certainly not audio\n" * 40, "notes.wav", 415, "not an audio file"),
        (png_bytes(), "picture.wav", 415, "wrong file type"),
        (audio_bytes(np.zeros(16000, np.float32)), "quiet.wav", 422, "silent"),
        (audio_bytes(speechlike(0.05)), "blip.wav", 422, "too short"),
        (CLIP, "../../etc/passwd", 400, "bad file name"),
        (CLIP, "x" * 300 + ".wav", 400, "bad file name"),
        (np.random.default_rng(0).bytes(3 * 2**20), "huge.wav", 413, "larger than 2 MB"),
    ],
    ids=[
        "empty",
        "truncated",
        "text",
        "image",
        "silent",
        "too-short",
        "path-name",
        "overlong-name",
        "too-big",
    ],
)
def test_bad_uploads_get_a_clear_4xx(client, data: bytes, name: str, status: int, message: str) -> None:
    for path in ("/api/v1/analyze", "/api/v1/steer"):
        r = post(client, path, data, name, spec={"features": [{"id": 1, "strength": 1}]})
        assert r.status_code == status, (path, r.text)
        assert message in r.json()["detail"]
    assert post(client, "/api/v1/analyze").status_code == 200  # and the server keeps serving


def test_a_chunked_upload_is_cut_off_as_soon_as_it_passes_the_cap(client) -> None:
    """No Content-Length to check up front: the streamed body is counted while it is read."""
    big = httpx.Request("POST", "http://x/", files={"file": ("big.wav", bytes(3 * 2**20))})
    body = big.read()
    chunks = (body[i : i + 2**16] for i in range(0, len(body), 2**16))
    r = client.post("/api/v1/analyze", content=chunks, headers={"content-type": big.headers["content-type"]})
    assert r.status_code == 413 and "larger than 2 MB" in r.json()["detail"]


def test_malformed_requests_get_a_clear_4xx(client) -> None:

    assert (
        client.post("/api/v1/analyze", content=CLIP, headers={"content-type": "audio/wav"}).status_code == 400
    )
    r = client.post("/api/v1/analyze", data={"spec": "{}"}, files={"other": ("a.wav", CLIP)})
    assert r.status_code == 400 and "field `file`" in r.json()["detail"]
    bad_spec = post(client, "/api/v1/steer", spec='{"features": [{"id": 1, "strength": "lots"}]}')
    assert bad_spec.status_code == 422 and "finite number" in bad_spec.json()["detail"]
    assert post(client, "/api/v1/steer").status_code == 422  # no spec at all
    unknown = post(client, "/api/v1/steer", spec={"features": [{"id": 10**6, "strength": 1}]})
    assert unknown.status_code == 422 and "unknown feature ids" in unknown.json()["detail"]
    windows = post(client, "/api/v1/analyze", name="C:\\Users\\evil\\clip.wav")  # the parser keeps the base
    assert windows.status_code == 200 and windows.json()["filename"] == "clip.wav"
    dom = post(
        client, "/api/v1/steer", spec={"toward_language": "es", "source_language": "en", "method": "dom"}
    )
    assert dom.status_code == 422 and "whisper-atlas extract" in dom.json()["detail"]


def test_without_an_sae_live_requests_name_the_command_to_run(data_root) -> None:
    from backend.app import create_app
    from backend.settings import Settings

    with TestClient(create_app(Settings(data_dir=data_root))) as c:
        r = post(c, "/api/v1/analyze")
    assert r.status_code == 503 and "whisper-atlas train" in r.json()["detail"]


def test_openapi_documents_the_multipart_bodies(client) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    body = spec["paths"]["/api/v1/steer"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(body["properties"]) == {"file", "spec"} and body["required"] == ["file"]
    assert "503" in spec["paths"]["/api/v1/analyze"]["post"]["responses"]


# --- the page and its partials ---------------------------------------------------------------------------


def test_live_page_offers_upload_recording_presets_and_prefill(client) -> None:
    page = client.get("/live?feature=42")
    assert page.status_code == 200
    html = page.text
    for needle in (
        'id="live-file"',
        'id="live-record"',
        'id="live-preset"',  # filled from GET /api/v1/presets by live.js
        'value="scale"',
        'value="nonspeech"',
        'value="random"',
        'data-feature="42"',
        "/static/js/live.js",
    ):
        assert needle in html
    assert "media-src 'self' blob:" in page.headers["content-security-policy"]
    assert client.get("/live?feature=-1").status_code == 422


def test_partials_render_analysis_and_three_transcripts(client) -> None:
    analysis = post(client, "/live/analyze", name="<img src=x onerror=alert(1)>.wav")
    assert analysis.status_code == 200
    assert 'id="live-transcript"' in analysis.text and 'class="live-heatmap"' in analysis.text
    assert "&lt;img src=x onerror=alert(1)&gt;.wav" in analysis.text and "<img src=x" not in analysis.text
    assert 'href="/features/' in analysis.text
    steered = post(client, "/live/steer", spec={"features": [{"id": 2, "strength": 1.5}]})
    assert steered.status_code == 200
    assert steered.text.count('class="card live-transcript') == 3
    assert steered.text.count('class="live-measures"') == 2  # reconstructed and steered, not the baseline
    assert (
        "text reads as" in steered.text and "CER vs baseline" in steered.text and "<summary>" in steered.text
    )
    assert "data-succeeded" not in steered.text  # no target language asked
    toward = post(client, "/live/steer", spec={"toward_language": "es", "source_language": "en"})
    assert toward.status_code == 200 and toward.text.count("data-succeeded=") == 2
    assert "toward es" in toward.text
    error = post(client, "/live/steer", b"", spec={"features": [{"id": 2, "strength": 1.5}]})
    assert error.status_code == 400 and 'class="live-error"' in error.text


# --- the bounded worker ------------------------------------------------------------------------------------


def gated_app(data_root, **settings):
    """An app whose model load waits for `gate`: the worker is busy until the test opens it."""
    gate = threading.Event()

    def load():
        gate.wait(120)
        return tiny_resources()

    return live_app(data_root, load=load, settings=InferenceSettings(max_new_tokens=8, **settings)), gate


def wait_for(condition, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def http_post(url: str, timeout: float = 120) -> httpx.Response:
    return httpx.post(url, files={"file": ("clip.wav", CLIP)}, timeout=timeout)


def test_a_full_queue_answers_503_with_retry_after_and_keeps_serving(data_root) -> None:
    app, gate = gated_app(data_root, max_waiting=1, retry_after_s=7)
    service = app.state.inference
    with LiveServer(app) as server, ThreadPoolExecutor(2) as pool:
        url = server.url + "/api/v1/analyze"
        admitted = [pool.submit(http_post, url) for _ in range(2)]
        wait_for(lambda: service.in_flight == 2, "two admitted requests")
        refused = http_post(url)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "7"
        assert "busy" in refused.json()["detail"]
        gate.set()
        assert [f.result().status_code for f in admitted] == [200, 200]
        assert http_post(url).status_code == 200
        assert service.in_flight == 0


def test_a_slow_request_times_out_with_504_and_frees_its_slot(data_root) -> None:
    app, gate = gated_app(data_root, timeout_s=0.5)
    service = app.state.inference
    with LiveServer(app) as server:
        r = http_post(server.url + "/api/v1/analyze")
        assert r.status_code == 504 and "retry" in r.json()["detail"]
        wait_for(lambda: service.in_flight == 0, "the queued job to be dropped")
        gate.set()


def test_a_client_that_left_is_dropped_before_its_turn(data_root) -> None:
    app, gate = gated_app(data_root)
    service = app.state.inference
    with LiveServer(app) as server:
        with pytest.raises(httpx.TimeoutException):
            http_post(server.url + "/api/v1/analyze", timeout=1.0)
        gate.set()
        wait_for(lambda: service.in_flight == 0, "the abandoned job to finish")
        assert service.dropped == 1
        assert http_post(server.url + "/api/v1/analyze").status_code == 200
