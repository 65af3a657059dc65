"""Clip audio: the FLAC with byte ranges, WAV windows cut from the real decoded audio, refusals."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest
from fastapi.testclient import TestClient

from pipelines.audio import SAMPLE_RATE, decode_audio


def test_whole_clip_is_the_flac_with_byte_ranges(client: TestClient) -> None:
    clip = client.get("/api/v1/clips/0").json()
    full = client.get("/api/v1/clips/0/audio")
    assert full.status_code == 200 and full.headers["content-type"] == "audio/flac"
    assert full.headers["accept-ranges"] == "bytes" and full.content[:4] == b"fLaC"
    assert len(decode_audio(full.content)) == pytest.approx(
        clip["duration"] * SAMPLE_RATE, abs=SAMPLE_RATE * 0.05
    )
    part = client.get("/api/v1/clips/0/audio", headers={"Range": "bytes=4-99"})
    assert part.status_code == 206 and part.content == full.content[4:100]
    assert part.headers["content-range"] == f"bytes 4-99/{len(full.content)}"
    assert client.get("/api/v1/clips/0/audio", headers={"Range": f"bytes={10**9}-"}).status_code == 416


def test_window_is_a_wav_of_exactly_that_audio(client: TestClient) -> None:
    response = client.get("/api/v1/clips/0/audio", params={"start": 0.25, "end": 0.75})
    assert response.status_code == 200 and response.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(response.content)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, SAMPLE_RATE)
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    assert len(pcm) == SAMPLE_RATE // 2
    reference = decode_audio(client.get("/api/v1/clips/0/audio").content)[
        SAMPLE_RATE // 4 : 3 * SAMPLE_RATE // 4
    ]
    assert np.abs(pcm / 32767.0 - reference).max() < 2e-4


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"start": 0.5, "end": 0.5}, "end after it starts"),
        ({"start": 0.8, "end": 0.2}, "end after it starts"),
        ({"start": 0.0, "end": 500.0}, "past the clip's end"),
        ({"start": 100.0}, "end after it starts"),
    ],
)
def test_out_of_range_windows_are_refused(client: TestClient, params: dict, message: str) -> None:
    response = client.get("/api/v1/clips/0/audio", params=params)
    assert response.status_code == 422 and message in response.json()["detail"]


def test_overlong_windows_are_refused(atlas_path) -> None:
    from backend.app import create_app
    from tests.backend.conftest import settings_for

    with TestClient(create_app(settings_for(atlas_path, max_audio_window_s=0.2))) as client:
        response = client.get("/api/v1/clips/0/audio", params={"start": 0, "end": 0.5})
        assert response.status_code == 422 and "limit" in response.json()["detail"]


@pytest.mark.parametrize(("clip_id", "status"), [(1, 403), (2, 403), (3, 404), (4, 403)])
def test_audio_outside_the_allowed_folders_or_missing_is_refused(
    hostile_client: TestClient, clip_id: int, status: int
) -> None:
    for params in ({}, {"start": 0, "end": 0.1}):
        response = hostile_client.get(f"/api/v1/clips/{clip_id}/audio", params=params)
        assert response.status_code == status
        assert "passwd" not in response.text and "root:" not in response.text


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/clips/..%2F..%2Fetc%2Fpasswd/audio",
        "/api/v1/clips/0%2F..%2F..%2Fetc%2Fpasswd/audio",
        "/static/..%2F..%2F..%2Fetc%2Fpasswd",
        "/static/../../pyproject.toml",
    ],
)
def test_path_traversal_in_urls_is_refused(client: TestClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code in (404, 422)
    assert "root:" not in response.text and "[project]" not in response.text
