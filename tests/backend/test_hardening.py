"""Requests that cannot hurt, against the real server (uvicorn on loopback, tiny random Whisper): foreign
Origins refused, bounded specs, a full queue or too many uploads refused before any decoding, quiet client
disconnects, unexpected errors as a 500 with an error id, no server paths in answers, offline API docs."""

from __future__ import annotations

import json
import logging
import re
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from fastapi import FastAPI

from backend.app import create_app
from backend.errors import PROJECT_ROOT
from backend.services.inference import InferenceService, InferenceSettings
from backend.settings import Settings, UploadLimits
from pipelines import audio_sandbox
from tests.backend.test_live_api import CLIP, gated_app, wait_for
from tests.fixtures.live_server import LiveServer, tiny_resources


def make_app(data_root: Path, load=tiny_resources, **settings: Any) -> FastAPI:
    """The real app with `settings` and its inference service on the tiny model."""
    app = create_app(Settings(data_dir=data_root, **settings))
    app.state.inference = InferenceService(load, InferenceSettings(max_new_tokens=4))
    return app


@pytest.fixture
def server(data_root: Path) -> Iterator[LiveServer]:
    with LiveServer(make_app(data_root, allowed_origins=("https://atlas.example",))) as live:
        yield live


def post(url: str, headers: dict[str, str] | None = None, **fields: str) -> httpx.Response:
    return httpx.post(url, files={"file": ("clip.wav", CLIP)}, data=fields, headers=headers, timeout=60)


# --- Origin and Host ------------------------------------------------------------------------------------


def test_posts_from_foreign_origins_are_refused(server: LiveServer) -> None:
    for path in ("/api/v1/analyze", "/live/analyze", "/api/v1/steer"):
        foreign = post(server.url + path, {"Origin": "https://evil.example"})
        assert foreign.status_code == 403 and "cross-origin" in foreign.text, (path, foreign.text)
    rebinding = post(
        server.url + "/api/v1/analyze", {"Origin": "http://evil.example", "Host": "evil.example"}
    )
    assert rebinding.status_code == 403  # DNS rebinding: Origin and Host agree, but name another site
    assert post(server.url + "/api/v1/analyze", {"Origin": "null"}).status_code == 403
    assert post(server.url + "/api/v1/analyze", {"Origin": server.url}).status_code == 200
    assert (
        post(server.url + "/api/v1/analyze", {"Origin": f"http://localhost:{server.port}"}).status_code == 403
    )
    assert post(server.url + "/api/v1/analyze", {"Origin": "https://atlas.example"}).status_code == 200
    assert post(server.url + "/api/v1/analyze").status_code == 200  # curl and scripts send no Origin
    assert httpx.get(server.url + "/healthz", headers={"Origin": "https://evil.example"}).status_code == 200


# --- what a request may carry ----------------------------------------------------------------------------


def test_deep_or_huge_specs_get_a_422(server: LiveServer) -> None:
    url = server.url + "/api/v1/steer"
    deep = post(url, spec="[" * 30_000 + "]" * 30_000)  # RecursionError (500) before
    assert deep.status_code == 422 and "nested too deeply" in deep.json()["detail"]
    nested = {"features": [{"id": 1, "strength": 1, "x": json.loads("[" * 20 + "]" * 20)}]}
    assert "nested too deeply" in post(url, spec=json.dumps(nested)).json()["detail"]
    long = post(url, spec=json.dumps({"features": [{"id": 1, "strength": 1}] * 5000}))
    assert long.status_code == 422 and "too long" in long.json()["detail"]
    assert post(url, spec=json.dumps({"features": [{"id": 1, "strength": 1}]})).status_code == 200


def test_a_full_queue_answers_503_before_decoding(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app, gate = gated_app(data_root, max_waiting=0, retry_after_s=3)
    decodes: list[Path] = []
    decode = audio_sandbox.decode_file_isolated

    def counted(path: Path, **kwargs: object):
        decodes.append(path)
        return decode(path, **kwargs)

    monkeypatch.setattr(audio_sandbox, "decode_file_isolated", counted)
    with LiveServer(app) as server:
        url = server.url + "/api/v1/analyze"
        admitted = threading.Thread(target=post, args=(url,))
        admitted.start()
        wait_for(lambda: app.state.inference.in_flight == 1 and len(decodes) == 1, "the admitted request")
        refused = post(url)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "3"
        assert "busy" in refused.json()["detail"] and len(decodes) == 1  # refused without being decoded
        gate.set()
        admitted.join(timeout=120)
    assert app.state.inference.in_flight == 0


def test_too_many_concurrent_uploads_get_503_with_retry_after(data_root: Path) -> None:
    release = threading.Event()
    request = httpx.Request("POST", "http://x/", files={"file": ("slow.wav", CLIP)})
    body = request.read()

    def slow_body() -> Iterator[bytes]:
        yield body[:1000]
        release.wait(60)
        yield body[1000:]

    app = make_app(data_root, uploads=UploadLimits(max_concurrent=1))
    with LiveServer(app) as server:
        url = server.url + "/api/v1/analyze"
        headers = {"content-type": request.headers["content-type"]}
        results: list[httpx.Response] = []
        slow = threading.Thread(
            target=lambda: results.append(httpx.post(url, content=slow_body(), headers=headers, timeout=60))
        )
        slow.start()
        gate = app.state.uploads
        wait_for(lambda: gate.active == 1, "the slow upload to start")
        busy = post(url)
        assert busy.status_code == 503 and "too many uploads" in busy.json()["detail"]
        assert busy.headers["retry-after"] == "5"
        release.set()
        slow.join(timeout=60)
        assert results[0].status_code == 200 and gate.active == 0
        assert post(url).status_code == 200


def test_a_client_that_leaves_mid_upload_is_noted_quietly(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    uploads_tmp = tmp_path / "tmp"
    uploads_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(uploads_tmp))
    logging.getLogger("uvicorn").addHandler(caplog.handler)  # uvicorn's loggers do not propagate
    try:
        app = make_app(data_root)
        with LiveServer(app) as server, caplog.at_level(logging.INFO):
            for _ in range(3):
                with socket.create_connection(("127.0.0.1", server.port)) as sock:
                    sock.sendall(
                        b"POST /api/v1/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n"
                        b"Content-Type: multipart/form-data; boundary=xyz\r\n\r\n--xyz\r\n"
                        b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
                        + CLIP[:20000]
                    )
            gate = app.state.uploads
            wait_for(lambda: gate.active == 0 and not any(uploads_tmp.iterdir()), "the uploads to end")
            assert post(server.url + "/api/v1/analyze").status_code == 200
    finally:
        logging.getLogger("uvicorn").removeHandler(caplog.handler)
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not loud, [r.getMessage() for r in loud]
    assert not any(uploads_tmp.iterdir())  # every temporary upload folder removed


# --- errors ------------------------------------------------------------------------------------------------


def test_unexpected_errors_are_a_500_with_an_id_that_the_log_has(
    data_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def boom() -> None:
        raise RuntimeError(f"secret state in {data_root}")

    def broken_model():
        raise RuntimeError("the model exploded")

    app = make_app(data_root, load=broken_model)
    app.add_api_route("/api/v1/boom", boom)
    app.add_api_route("/boom", boom)
    with LiveServer(app) as server:
        api = httpx.get(server.url + "/api/v1/boom")
        page = httpx.get(server.url + "/boom")
        live = post(server.url + "/api/v1/analyze")
    assert api.status_code == page.status_code == live.status_code == 500
    ids = [re.findall(r"id ([0-9a-f]{8})", text)[0] for text in (api.json()["detail"], page.text, live.text)]
    for response in (api, page, live):
        assert not any(word in response.text for word in ("Traceback", "secret", "exploded")), response.text
    assert "<html" in page.text
    logged = {
        r.getMessage().split()[2]: r for r in caplog.records if r.getMessage().startswith("unexpected error")
    }
    assert set(ids) <= set(logged) and all(logged[i].exc_info for i in ids)


def test_no_answer_shows_a_server_path(data_root: Path) -> None:
    with LiveServer(create_app(Settings(data_dir=data_root))) as server:  # no atlas, no SAE
        health = httpx.get(server.url + "/healthz").json()
        no_sae = post(server.url + "/api/v1/analyze")
        pages = [httpx.get(server.url + path) for path in ("/", "/features/3", "/api/v1/atlas")]
    assert health["atlas"] == "runs/default/atlas.duckdb"
    assert no_sae.status_code == 503 and "whisper-atlas train" in no_sae.json()["detail"]
    for text in (json.dumps(health), no_sae.text, *(p.text for p in pages)):
        assert str(data_root) not in text and str(PROJECT_ROOT) not in text, text[:300]


def test_the_api_docs_load_from_the_server_itself(server: LiveServer) -> None:
    page = httpx.get(server.url + "/api/v1/docs")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(assets) == 3 and all(a.startswith("/api/v1/docs/") for a in assets)
    for asset in assets:
        answer = httpx.get(server.url + asset)
        assert answer.status_code == 200 and len(answer.content) > 100, asset
    assert httpx.get(server.url + "/api/v1/docs/index.html").status_code == 404  # only the files it needs
