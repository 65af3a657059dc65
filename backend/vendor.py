"""Copy the browser dependencies installed by npm (package.json) into frontend/static/vendor/.

The server must work offline, so nothing is loaded from a CDN: `npm ci` fetches htmx at install time and this
copies the built file next to our own static assets (git-ignored: third-party code is never committed).
Run `python -m backend.vendor` after `npm ci`; the Makefile's install step does both.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "frontend" / "static" / "vendor"
FILES = {"node_modules/htmx.org/dist/htmx.min.js": "htmx.min.js"}
"""npm file (relative to the repository root) -> name under frontend/static/vendor/."""


def vendor(root: Path = ROOT, target: Path = VENDOR) -> list[Path]:
    """Copy every file of `FILES`; raises FileNotFoundError naming `npm ci` when one is missing."""
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for source, name in FILES.items():
        path = root / source
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run `npm ci` in {root} first.")
        copied.append(Path(shutil.copyfile(path, target / name)))
    return copied


def main() -> int:
    try:
        for path in vendor():
            print(f"vendored {path.relative_to(ROOT)}")
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
