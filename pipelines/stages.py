"""Stage bookkeeping: which stages of a run are done, and with which inputs.

Each stage records a fingerprint of its inputs (config values and the identity of the files it read) in
`data/runs/<run>/stages.json`. `demo` skips a stage whose recorded fingerprint equals the current one and
whose outputs still exist; anything else reruns it (stages themselves resume partial work where they can).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.paths import RunPaths


def file_identity(path: Path) -> list[Any]:
    """Cheap identity of a file or folder: (relative name, size, mtime) of every file under it."""
    if not path.exists():
        return []
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [[str(p.relative_to(path.parent)), p.stat().st_size, int(p.stat().st_mtime_ns)] for p in files]


def fingerprint(**inputs: Any) -> str:
    """A stable hash of JSON-serialisable inputs (paths are turned into their file identities)."""

    def normalise(value: Any) -> Any:
        if isinstance(value, Path):
            return file_identity(value)
        if isinstance(value, dict):
            return {k: normalise(v) for k, v in sorted(value.items())}
        if isinstance(value, (list, tuple)):
            return [normalise(v) for v in value]
        return value

    blob = json.dumps(normalise(inputs), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class StageRecord:
    fingerprint: str
    finished_at: float
    seconds: float
    summary: dict[str, Any]


class StageLog:
    """`stages.json` of one run: read, query, and record finished stages (written atomically)."""

    def __init__(self, run: RunPaths):
        self.path = run.stages
        self.records: dict[str, StageRecord] = {}
        if self.path.exists():
            raw = json.loads(self.path.read_text())
            self.records = {name: StageRecord(**rec) for name, rec in raw.items()}

    def is_current(self, stage: str, fp: str) -> bool:
        record = self.records.get(stage)
        return record is not None and record.fingerprint == fp

    def record(self, stage: str, fp: str, started: float, summary: dict[str, Any] | None = None) -> None:
        now = time.time()
        self.records[stage] = StageRecord(fp, now, round(now - started, 2), summary or {})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({k: vars(v) for k, v in self.records.items()}, indent=1, default=str))
        tmp.replace(self.path)
