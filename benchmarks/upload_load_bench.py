"""`/healthz` and feature-page latency while 8 concurrent 30 s uploads decode and analyse, against the same
server with no uploads, in one run: the ratio of p99s says what uploads cost everyone else.

The real app (backend.app.create_app) under uvicorn in its own process, over a synthetic atlas written
through the real build (tests/fixtures/synthetic_atlas.py); its live worker runs the tiny random Whisper and
a 96-latent SAE (tests/fixtures/live_server.py), or with `--run` a real run's Whisper and SAE. Uploads are
decoded in the server's worker processes (pipelines/audio_sandbox.py) and analysed on its one inference
thread. Two phases of `--seconds` each: idle, then with `--uploads` clients each posting a 30 s FLAC clip to
`/api/v1/analyze` back to back (the queue is made long enough that none is refused). In both, `--probes`
threads alternate GET /healthz and GET /features/{id} of random, already cached pages, with a 20 ms pause.

    python benchmarks/upload_load_bench.py [--uploads 8] [--seconds 20] [--probes 2] [--run data/runs/default]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: `tests.fixtures` (not installed) imports from the checkout

from server_bench import free_port, health, wait_until_idle  # noqa: E402 - the script folder is on sys.path

FEATURES = 2048
PAGES = 200
"""Feature pages the probes visit, rendered once before timing (the page cache's steady state)."""


def serve(port: int, atlas: Path, run: Path | None, uploads: int) -> None:
    """The server process: the app with its live worker on the tiny model (or `run`'s), queue >= uploads."""
    import uvicorn

    from backend.app import create_app
    from backend.services.inference import InferenceService
    from backend.settings import InferenceSettings, Settings

    inference = InferenceSettings(max_waiting=uploads, timeout_s=600, max_new_tokens=32)
    settings = Settings(atlas=atlas, data_dir=atlas.parent, port=port, prerender_share=0, inference=inference)
    app = create_app(settings)
    if run is None:
        from tests.fixtures.live_server import tiny_resources

        app.state.inference = InferenceService(tiny_resources, inference)
    else:
        app.state.inference = InferenceService.for_run(run, inference)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


class Probe(threading.Thread):
    """GET /healthz and a random cached feature page in turn, pausing 20 ms; keeps each latency."""

    def __init__(self, base: str, seed: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.base, self.stop = base, stop
        self.rng = np.random.default_rng(seed)
        self.seconds: dict[str, list[float]] = {"healthz": [], "feature_page": []}
        self.errors = 0

    def run(self) -> None:
        with httpx.Client(timeout=30, headers={"Accept-Encoding": "gzip"}) as client:
            while not self.stop.wait(0.02):
                for kind, path in (("healthz", "/healthz"), ("feature_page", f"/features/{self.page()}")):
                    start = time.perf_counter()
                    ok = client.get(self.base + path).status_code == 200
                    self.seconds[kind].append(time.perf_counter() - start)
                    self.errors += not ok

    def page(self) -> int:
        return int(self.rng.integers(PAGES))


def uploader(url: str, clip: bytes, stop: threading.Event, results: list[tuple[int, float]]) -> None:
    """Post `clip` back to back until `stop`; records (status, seconds) per upload."""
    with httpx.Client(timeout=600) as client:
        while not stop.is_set():
            start = time.perf_counter()
            status = client.post(url, files={"file": ("speech.flac", clip)}).status_code
            results.append((status, time.perf_counter() - start))


def phase(base: str, args: argparse.Namespace, clip: bytes | None) -> dict:
    """Probe latencies over `args.seconds`, with `args.uploads` uploaders running when `clip` is given."""
    stop_uploads, stop_probes = threading.Event(), threading.Event()
    uploads: list[tuple[int, float]] = []
    workers = [
        threading.Thread(target=uploader, args=(base + "/api/v1/analyze", clip, stop_uploads, uploads))
        for _ in range(args.uploads if clip is not None else 0)
    ]
    for worker in workers:
        worker.start()
    if workers:
        time.sleep(5)  # every upload in the queue, decoding or analysing, before timing starts
    probes = [Probe(base, seed, stop_probes) for seed in range(args.probes)]
    for probe in probes:
        probe.start()
    time.sleep(args.seconds)
    stop_probes.set()
    for probe in probes:
        probe.join()
    stop_uploads.set()
    for worker in workers:
        worker.join()
    result: dict = {"probe_errors": sum(p.errors for p in probes)}
    for kind in ("healthz", "feature_page"):
        ms = 1000 * np.array([s for p in probes for s in p.seconds[kind]])
        result[kind] = {
            "n": len(ms),
            **{f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 99)},
            "max_ms": round(float(ms.max()), 1),
        }
    if workers:
        statuses = [status for status, _ in uploads]
        result["uploads"] = {
            "done": len(uploads),
            "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
            "median_s": round(float(np.median([s for _, s in uploads])), 2) if uploads else None,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=8, help="concurrent 30 s uploads")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each timed phase")
    parser.add_argument("--probes", type=int, default=2, help="probing threads")
    parser.add_argument("--run", type=Path, help="a run folder: its Whisper and SAE instead of the tiny ones")
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "ATLAS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), Path(args.serve[1]), args.run, args.uploads)
        return

    from tests.fixtures.audio import audio_bytes, speechlike
    from tests.fixtures.synthetic_atlas import write_synthetic_atlas

    clip = audio_bytes(speechlike(30.0), "flac")
    with tempfile.TemporaryDirectory(prefix="upload-bench-") as tmp:
        atlas = write_synthetic_atlas(Path(tmp) / "atlas.duckdb", n_features=FEATURES, n_clips=24)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        argv = [sys.executable, __file__, "--serve", str(port), str(atlas), "--uploads", str(args.uploads)]
        server = subprocess.Popen([*argv, *(["--run", str(args.run)] if args.run else [])], cwd=ROOT)
        try:
            report = measure(base, server, args, clip)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(json.dumps(report, indent=2))


def measure(base: str, server: subprocess.Popen, args: argparse.Namespace, clip: bytes) -> dict:
    deadline = time.monotonic() + 300
    while (health(base) or {}).get("status") != "ok":
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.5)
    with httpx.Client(timeout=600) as client:  # render the probed pages; load the model; start the decoders
        for feature_id in range(PAGES):
            client.get(f"{base}/features/{feature_id}")
        assert client.post(base + "/api/v1/analyze", files={"file": ("warm.flac", clip)}).status_code == 200
    wait_until_idle(server.pid)
    idle = phase(base, args, None)
    loaded = phase(base, args, clip)
    return {
        "benchmark": f"/healthz and cached feature pages, idle vs {args.uploads} concurrent 30 s uploads",
        "model": str(args.run) if args.run else "tiny random Whisper + 96-latent SAE (tests/fixtures)",
        "cpus": os.cpu_count(),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "seconds_per_phase": args.seconds,
        "idle": idle,
        "uploading": loaded,
        "p99_ratio": {
            kind: round(loaded[kind]["p99_ms"] / max(idle[kind]["p99_ms"], 1e-3), 2)
            for kind in ("healthz", "feature_page")
        },
    }


if __name__ == "__main__":
    main()
