"""Feature-page latency under load: the real server (uvicorn, one worker) on loopback, 32 concurrent clients.

Target: p50 <= 30 ms and p99 <= 150 ms for random /features/{id} pages at 32 concurrent clients
on 2 cores, with an atlas of >= 16k features, pre-rendering off (every page a first visit), memory flat in
the feature count, and zero errors. The atlas is synthetic but written through the real build code
(tests/fixtures/synthetic_atlas.py), its feature pages stored in it as `whisper-atlas build` stores them, so
the server reads exactly the real schema.

Runs of `whisper-atlas serve`, each loaded by wrk (Debian `wrk`, installed by `scripts/install.sh --dev`)
with `--clients` closed-loop connections (send, wait, send the next) hitting uniformly random feature ids.
wrk is C and spends ~0.1 ms of CPU per request; a Python client (httpx, measured: 5 ms per request) would
saturate a core first and measure itself:
- `stored` (the default server, measured): background pre-rendering off, nothing cached: every request is
  answered with the page the build stored in the atlas (batched lookups, nothing kept in memory);
- `on_demand` (baseline: the per-request render path, as before pages were stored): stored pages and
  pre-rendering off, caches empty, so nearly every request renders its page (feature blocks read from DuckDB
  as random ids first touch them);
- `prerendered` (with `--warm`; the old steady state, as baseline): stored pages off, measured once the
  background pre-rendering has rendered every feature page into the in-memory page cache (at full share
  here, to get there sooner: minutes for 16k features).
`stored`'s p50, p99 and throughput are printed as ratios to each baseline measured in the same run. Besides
latency, the server's and wrk's CPU time per request and the server's resident memory after the run are
reported: on a shared, noisy machine the CPU times are the steadier numbers (with 32 closed-loop clients p50
is about 32x the server's when it has a core), and the memory shows what each mode keeps.

    python benchmarks/server_bench.py [--features 16384] [--clients 32] [--seconds 15] [--atlas PATH]
                                      [--runs stored,on_demand] [--warm] [--identity]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: `tests.fixtures` (not installed) imports from the checkout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), to express load as CPU ms per request."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU time of this process's finished children (wrk runs as one), user + system."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def health(base: str) -> dict | None:
    try:
        return httpx.get(f"{base}/healthz", timeout=5).json()
    except httpx.HTTPError:
        return None


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process (Linux /proc), MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def start_server(atlas: Path, port: int, prerender_share: float, stored_pages: bool) -> subprocess.Popen:
    command = [sys.executable, "-m", "pipelines.cli", "serve", "--atlas", str(atlas), "--port", str(port)]
    env = {
        **os.environ,
        "WHISPER_ATLAS_PRERENDER_SHARE": str(prerender_share),
        "WHISPER_ATLAS_STORED_PAGES": str(stored_pages).lower(),
    }
    server = subprocess.Popen(
        [*command, "--log-level", "warning"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
    )  # stdout stays the report's
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (health(f"http://127.0.0.1:{port}") or {}).get("status") == "ok":
            return server
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with status {server.returncode}")
        time.sleep(0.2)
    server.terminate()
    raise RuntimeError("the server did not become healthy within 120 s")


def wait_until_idle(pid: int, quiet_s: float = 2.0, limit_s: float = 120.0) -> None:
    """Let start-up work (imports, the live model's warm-up) finish: wait for `quiet_s` without CPU use."""
    deadline = time.monotonic() + limit_s
    last, quiet_since = cpu_seconds(pid), time.monotonic()
    while time.monotonic() < deadline and last is not None:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        if now is not None and now - last > 0.05:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return
        last = now


WRK_SCRIPT = """
headers = {}
init = function(args)
  n, seed = tonumber(args[1]), tonumber(args[2]); math.randomseed(seed)
  if args[3] == "gzip" then headers["Accept-Encoding"] = "gzip, deflate, br" end
end
request = function() return wrk.format("GET", "/features/" .. math.random(0, n - 1), headers) end
done = function(s, latency, requests)
  io.write(string.format('{"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "non_2xx": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d}\\n',
    s.requests, s.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, s.errors.status, s.errors.connect, s.errors.read, s.errors.write, s.errors.timeout))
end
"""
"""wrk's Lua hooks: uniformly random feature ids, asked for as a browser asks (gzip accepted) unless
`--identity` (as this bench did before stored pages: the server then decompresses every page), and the
summary as one JSON line."""


def load(base: str, n_features: int, clients: int, seconds: float, seed: int, gzip: bool = True) -> dict:
    """Closed-loop load from wrk: `clients` connections request random feature pages for `seconds`."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT)
        script.flush()
        argv = ["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "10s", "-s", script.name, base]
        out = subprocess.run(
            [*argv, "--", str(n_features), str(seed), "gzip" if gzip else "identity"],
            capture_output=True,
            text=True,
            check=True,
        )
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    errors = {k: summary[k] for k in ("non_2xx", "connect", "read", "write", "timeout") if summary[k]}
    return {
        "requests": summary["requests"],
        "throughput_rps": round(summary["requests"] / (summary["duration_us"] / 1e6), 1),
        **{f"{q}_ms": round(summary[f"{q}_us"] / 1000, 2) for q in ("p50", "p90", "p99", "max")},
        "errors": errors,
    }


def measure(
    atlas: Path, args: argparse.Namespace, prerender_share: float, stored_pages: bool, seed: int
) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(atlas, port, prerender_share, stored_pages)
    try:
        if (health(base) or {}).get("stored_pages") != stored_pages:
            raise RuntimeError(f"the server's stored pages are not {stored_pages} as asked: {health(base)}")
        waited = time.perf_counter()
        if prerender_share > 0:
            while (health(base) or {}).get("prerendering", True):
                time.sleep(1.0)
        wait_until_idle(server.pid)
        waited = time.perf_counter() - waited
        cpu_before, client_before = cpu_seconds(server.pid), children_cpu_seconds()
        result = load(base, args.features, args.clients, args.seconds, seed, gzip=not args.identity)
        cpu_after, client_after = cpu_seconds(server.pid), children_cpu_seconds()
        n = result["requests"]
        if cpu_before is not None and cpu_after is not None:
            result["server_cpu_ms_per_request"] = round(1000 * (cpu_after - cpu_before) / n, 3)
        result["client_cpu_ms_per_request"] = round(1000 * (client_after - client_before) / n, 3)
        result["pages_cached_after"] = (health(base) or {}).get("pages_cached")
        result["server_rss_mib_after"] = rss_mib(server.pid)
        result["setup_s"] = round(waited, 1)
        return result
    finally:
        server.terminate()
        server.wait(timeout=30)


MODES = {"stored": (0.0, True), "on_demand": (0.0, False), "prerendered": (1.0, False)}
"""Run name -> (pre-render share, stored pages) of its server."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=16384)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each timed run")
    parser.add_argument("--atlas", type=Path, help="reuse this atlas instead of writing a synthetic one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--runs",
        default="stored,on_demand",
        help="which runs, comma-separated: stored (measured), on_demand, prerendered (baselines)",
    )
    parser.add_argument(
        "--warm", action="store_true", help="add the pre-rendered steady state (minutes of set-up)"
    )
    parser.add_argument(
        "--identity", action="store_true", help="send no Accept-Encoding (pages sent uncompressed)"
    )
    args = parser.parse_args()
    wanted = [name for name in args.runs.split(",") if name] + (["prerendered"] if args.warm else [])
    unknown = set(wanted) - set(MODES)
    if unknown or "stored" not in wanted:
        parser.error(f"--runs takes {', '.join(MODES)} and must include stored (got {args.runs})")

    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="atlas-bench-") as tmp:
        atlas = args.atlas
        if atlas is None:
            from tests.fixtures.synthetic_atlas import write_synthetic_atlas

            atlas = Path(tmp) / "atlas.duckdb"
            t0 = time.perf_counter()
            write_synthetic_atlas(atlas, n_features=args.features, seed=args.seed)
            print(
                f"synthetic atlas: {args.features} features, {atlas.stat().st_size / 2**20:.0f} MiB, "
                f"written in {time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
            )
        runs = {
            name: measure(atlas, args, *MODES[name], seed=args.seed + (name == "prerendered"))
            for name in MODES
            if name in wanted
        }
    target = {"p50_ms": 30.0, "p99_ms": 150.0}
    cold = runs["stored"]
    ratios = {
        f"stored_vs_{name}": {
            "p50": round(cold["p50_ms"] / run["p50_ms"], 3),
            "p99": round(cold["p99_ms"] / run["p99_ms"], 3),
            "throughput": round(cold["throughput_rps"] / run["throughput_rps"], 3),
        }
        for name, run in runs.items()
        if name != "stored"
    }
    report = {
        "benchmark": "random /features/{id} pages under closed-loop load",
        "cpus": os.cpu_count(),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "features": args.features,
        "clients": args.clients,
        "accept_encoding": "identity" if args.identity else "gzip",
        "seconds_per_run": args.seconds,
        **runs,
        "ratios": ratios,
        "target": target,
        "meets_target": {
            name: run["p50_ms"] <= target["p50_ms"]
            and run["p99_ms"] <= target["p99_ms"]
            and not run["errors"]
            for name, run in runs.items()
        },
        "load_average_before": load_before,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
