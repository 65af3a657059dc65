"""Shared by the live tests: the real app wired to a tiny random Whisper + a small random SAE, audio bytes in
several formats, and a real uvicorn server in a thread (for concurrency and the browser)."""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from functools import cache
from pathlib import Path
from typing import Callable

import numpy as np

from backend.services.inference import InferenceService, InferenceSettings
from backend.services.uploads import UploadLimits
from tests.fixtures.audio import encode
from tests.pipelines.analysis_support import tiny_sae

SAMPLE_RATE = 16000


def speechlike(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """A voiced, syllable-modulated harmonic signal with a little noise (16 kHz float32)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    phase = 2 * np.pi * np.cumsum(140 + 20 * np.sin(2 * np.pi * 0.7 * t)) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (0.2 * envelope * voiced + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def audio_bytes(audio: np.ndarray, suffix: str = "wav") -> bytes:
    """`audio` (16 kHz) encoded by FFmpeg in the container its suffix names (tests.fixtures.audio.FORMATS)."""
    with tempfile.TemporaryDirectory() as folder:
        return encode(Path(folder) / f"clip.{suffix}", audio, SAMPLE_RATE).read_bytes()


@cache
def tiny_resources():
    """Tiny random Whisper + a 96-latent random TopK SAE on its final output (shared by all live tests)."""
    from pipelines.model.tiny import tiny_whisper
    from pipelines.steering import SteeringResources

    bundle = tiny_whisper()
    sae = tiny_sae(bundle.d_model, 96, 8).requires_grad_(False)
    return SteeringResources(bundle, sae, labels={i: f"tiny feature {i}" for i in range(0, 96, 3)})


def live_app(
    data_root: Path,
    load: Callable | None = None,
    settings: InferenceSettings | None = None,
    limits: UploadLimits | None = None,
):
    """The real app (backend.app.create_app) with its inference service on the tiny model."""
    from backend.app import create_app
    from backend.settings import Settings

    app = create_app(Settings(data_dir=data_root))
    app.state.inference = InferenceService(
        load or tiny_resources, settings or InferenceSettings(max_new_tokens=16)
    )
    if limits is not None:
        app.state.upload_limits = limits
    return app


class LiveServer:
    """uvicorn serving `app` on a free loopback port, in a background thread."""

    def __init__(self, app) -> None:
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
