"""The hostile audio corpus (tests/fixtures/hostile_audio.py) POSTed to the real server (uvicorn on loopback,
tiny random Whisper): every file gets a 4xx or a correct 200 within seconds, and `/healthz`, polled from
another thread all along, keeps answering fast. Decoder crashes and hangs are injected into the worker
processes to show that they cost one request a 422, never the server."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest

from backend.services import uploads
from backend.services.inference import InferenceSettings
from backend.services.uploads import UploadLimits
from tests.fixtures import hostile_audio
from tests.fixtures.audio import audio_bytes, speechlike
from tests.fixtures.hostile_audio import AUDIO, REFUSED, Hostile, faulty_workers
from tests.fixtures.live_server import LiveServer, live_app

MUTATIONS = int(os.environ.get("WHISPER_ATLAS_HOSTILE_MUTATIONS", "60"))
"""Fuzzed files per run (about 110 crafted ones come on top); raise it for a manual run."""

MAX_BYTES = 4 * 2**20
REFUSAL_BOUND_S = 5.0
"""Wall-clock bound on refusing one upload (the worst seen in 4 runs: 0.15 s)."""
ANALYSIS_BOUND_S = 30.0
"""Bound on a 200: decoding plus the tiny model's analysis, ~1 s on a quiet core, up to 5.6 s seen on 2 cores
shared with two pipeline runs (load 4-8); the inference timeout is 60 s."""
HEALTH_P99_S = 0.1
HEALTH_MAX_S = 0.5
"""`/healthz` p99 must stay under 100 ms while the corpus runs (seen: 30-53 ms); a single poll may reach
500 ms (seen: 120-231 ms; 123 ms on the idle server): the client threads, the server and the inference worker
share one Python process (the GIL) and, in CI, two busy cores, so one scheduling hiccup is not the server
stalling (a stall was 29 s)."""
FAULT_HEALTH_MAX_S = 1.0
"""While decoders crash or hang, single polls may take up to 1 s: each lost worker is replaced by a new
process importing PyAV (~0.4 s of CPU), which competes with the server for 2 shared cores (worst seen under
load 7: p99 273 ms, max 600 ms; 95 ms on a quieter moment)."""


class HealthProbe:
    """Polls `/healthz` every 20 ms in a thread and keeps the latencies."""

    def __init__(self, url: str) -> None:
        self.url = url + "/healthz"
        self.seconds: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> "HealthProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _poll(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.wait(0.02):
                start = time.perf_counter()
                status = client.get(self.url).status_code
                self.seconds.append(time.perf_counter() - start)
                if status != 200:
                    self.failures.append(str(status))

    def p99(self) -> float:
        return float(np.percentile(self.seconds, 99))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Hostile]:
    return hostile_audio.build(tmp_path_factory.mktemp("hostile"), mutations=MUTATIONS)


@pytest.fixture
def server(data_root: Path) -> Iterator[LiveServer]:
    limits = UploadLimits(max_bytes=MAX_BYTES, decode_timeout_s=3.0)
    settings = InferenceSettings(max_new_tokens=4)  # the transcript is not what is tested here
    with LiveServer(live_app(data_root, settings=settings, limits=limits)) as live:
        yield live


def post_file(client: httpx.Client, url: str, path: Path) -> httpx.Response:
    data = path.read_bytes() if path.stat().st_size <= MAX_BYTES else _head(path, MAX_BYTES + 1)
    return client.post(url, files={"file": (path.name, data)})


def _head(path: Path, size: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


def check_answer(item: Hostile, response: httpx.Response, seconds: float) -> str | None:
    """What is wrong with the server's answer to `item`, or None."""
    name, status = item.path.name, response.status_code
    if seconds > (ANALYSIS_BOUND_S if status == 200 else REFUSAL_BOUND_S):
        return f"{name}: {status} after {seconds:.1f} s"
    if status == 200:
        body = response.json()
        if item.expect == REFUSED:
            return f"{name}: accepted ({body['duration']} s) but should be refused"
        if not 0 < body["duration"] <= 30 or body["n_frames"] != len(body["frames"]):
            return f"{name}: implausible analysis {body['duration']} s, {body['n_frames']} frames"
        return None
    if not 400 <= status < 500 or "\n" in response.json()["detail"]:
        return f"{name}: {status} {response.text[:200]}"
    if item.expect == AUDIO and status != 413:  # real audio may only be refused for its size
        return f"{name}: {status} {response.json()['detail']} but it is audio"
    return None


def test_every_hostile_upload_gets_a_4xx_or_a_correct_200_and_healthz_stays_fast(
    server: LiveServer, corpus: list[Hostile]
) -> None:
    url = server.url + "/api/v1/analyze"
    wrong: list[str] = []
    statuses: Counter[tuple[str, int]] = Counter()
    worst = {"refused": (0.0, ""), "analysed": (0.0, "")}
    with httpx.Client(timeout=60) as client:  # the model loads at start-up, before the probe starts
        assert client.post(url, files={"file": ("warm.wav", audio_bytes(speechlike(1.0)))}).status_code == 200
    with HealthProbe(server.url) as health, httpx.Client(timeout=60) as client:
        for item in corpus:
            start = time.perf_counter()
            response = post_file(client, url, item.path)
            seconds = time.perf_counter() - start
            statuses[(item.kind, response.status_code)] += 1
            outcome = "analysed" if response.status_code == 200 else "refused"
            worst[outcome] = max(worst[outcome], (seconds, item.path.name))
            problem = check_answer(item, response, seconds)
            if problem:
                wrong.append(problem)
        assert client.post(url, files={"file": ("ok.wav", audio_bytes(speechlike(1.0)))}).status_code == 200
    per_kind = Counter(item.kind for item in corpus)
    print(f"\n{len(corpus)} hostile uploads {dict(per_kind)}; answers {dict(sorted(statuses.items()))}")
    print("worst: " + ", ".join(f"{k} {s:.2f} s ({name})" for k, (s, name) in worst.items()))
    polls, p99, peak = len(health.seconds), health.p99() * 1e3, max(health.seconds) * 1e3
    print(f"/healthz: {polls} polls, p99 {p99:.1f} ms, max {peak:.1f} ms")
    assert not wrong, "\n".join(wrong)
    assert not health.failures and len(health.seconds) > 50
    assert health.p99() < HEALTH_P99_S and max(health.seconds) < HEALTH_MAX_S


@pytest.mark.parametrize(
    ("name", "reason"), [("crash", "crashed on this file"), ("hang", "took longer than 3 s")]
)
def test_a_decoder_crash_or_hang_costs_one_request_a_422(
    server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, reason: str
) -> None:
    """Workers that segfault (crash*) or never return (hang*) on the uploaded file, several at once."""
    monkeypatch.setattr(uploads, "TEMP_NAME", name)  # the faulty decoder picks its fault by file name
    url = server.url + "/api/v1/analyze"
    clip = audio_bytes(speechlike(1.0))
    with (
        faulty_workers(tmp_path / "faults"),
        HealthProbe(server.url) as health,
        ThreadPoolExecutor(3) as pool,
    ):
        answers = list(
            pool.map(lambda _: httpx.post(url, files={"file": ("a.wav", clip)}, timeout=30), range(3))
        )
    for answer in answers:
        assert answer.status_code == 422 and reason in answer.json()["detail"], answer.text
        assert answer.json()["detail"].startswith("a.wav: ")
    print(f"\n{name}: /healthz p99 {health.p99() * 1e3:.1f} ms, max {max(health.seconds) * 1e3:.1f} ms")
    assert not health.failures and max(health.seconds) < FAULT_HEALTH_MAX_S
    monkeypatch.undo()
    assert httpx.post(url, files={"file": ("a.wav", clip)}, timeout=30).status_code == 200
