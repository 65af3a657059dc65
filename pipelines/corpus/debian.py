"""Fetch and unpack Debian packages without root, as the raw material of the default corpus.

`apt-get download` needs no privileges when it is given private package lists and a private cache
(`-o Dir::State::Lists=... -o Dir::Cache=...`), so nothing on the system is touched. Each package is unpacked
once into `data/cache/debs/<package>/` (a `.deb` is an `ar` archive holding `data.tar.*`, read here with the
standard library) and reused by every later build.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import IO, Iterable, Mapping, Sequence, cast

from pipelines.errors import AtlasError
from pipelines.paths import cache_dir

DOWNLOADS = "_downloads"
"""Subfolder of the debs cache where `.deb` files land (or where a user can drop them by hand)."""


class PackageUnavailableError(AtlasError):
    """A Debian package the corpus needs can neither be found unpacked, nor as a `.deb`, nor downloaded."""


def debs_dir() -> Path:
    return cache_dir() / "debs"


def ensure_packages(
    packages: Sequence[str], members: Mapping[str, Sequence[str]] | None = None
) -> dict[str, Path]:
    """Unpack each package into the cache (downloading what is missing) and return its folder by name.

    `members` optionally limits a package to some path prefixes (e.g. only the sounds of a large game).
    """
    missing = [name for name in packages if not (debs_dir() / name).is_dir()]
    if missing:
        found = _local_debs(missing)
        to_download = [name for name in missing if name not in found]
        if to_download:
            found |= _download(to_download)
        for name in missing:
            _unpack(found[name], debs_dir() / name, (members or {}).get(name, ()))
            found[name].unlink()
    return {name: debs_dir() / name for name in packages}


def _local_debs(packages: Iterable[str]) -> dict[str, Path]:
    """`.deb` files already in the downloads folder (from an interrupted run or put there by hand)."""
    folder = debs_dir() / DOWNLOADS
    found: dict[str, Path] = {}
    for name in packages:
        matches = sorted(folder.glob(f"{name}_*.deb"))
        if matches:
            found[name] = matches[-1]
    return found


def _download(packages: list[str]) -> dict[str, Path]:
    """Download `packages` with apt-get into the downloads folder, refreshing the private lists if needed."""
    if shutil.which("apt-get") is None:
        raise PackageUnavailableError(
            f"apt-get is not available to fetch {', '.join(packages)}: build the corpus on Debian/Ubuntu "
            f"(or in the `pipeline` docker service), or put those .deb files (bookworm, packages.debian.org) "
            f"into {debs_dir() / DOWNLOADS} and rerun"
        )
    apt = cache_dir() / "apt"
    options = ["-o", f"Dir::State::Lists={apt / 'lists'}", "-o", f"Dir::Cache={apt / 'cache'}"]
    for sub in ("lists/partial", "cache/archives/partial"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    folder = debs_dir() / DOWNLOADS
    folder.mkdir(parents=True, exist_ok=True)
    if not any((apt / "lists").glob("*_Packages*")):
        _apt(["apt-get", *options, "update"], folder)
    try:
        _apt(["apt-get", *options, "download", *packages], folder)
    except PackageUnavailableError:  # stale lists name files the mirror no longer has: refresh once
        _apt(["apt-get", *options, "update"], folder)
        _apt(["apt-get", *options, "download", *packages], folder)
    found = _local_debs(packages)
    lost = [name for name in packages if name not in found]
    if lost:
        raise PackageUnavailableError(f"apt-get reported success but left no .deb for {', '.join(lost)}")
    return found


def _apt(command: list[str], cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("E:")] or [
            result.stderr.strip()
        ]
        raise PackageUnavailableError(
            f"`{' '.join(command[:1] + command[5:])}` failed: {errors[0]} (check the network to the Debian "
            f"mirror, or put the .deb files into {debs_dir() / DOWNLOADS})"
        )


def _unpack(deb: Path, target: Path, prefixes: Sequence[str]) -> None:
    """Extract the data archive of `deb` into `target` atomically (a half-unpacked folder is never reused)."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with open(deb, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise PackageUnavailableError(f"{deb.name} is not a Debian package; delete it and rerun")
        partial.mkdir(parents=True)
        while header := f.read(60):
            name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
            if name.startswith("data.tar"):
                with tarfile.open(fileobj=cast(IO[bytes], _Slice(f, size)), mode="r|*") as tar:
                    for member in tar:
                        path = member.name.removeprefix("./")
                        if not prefixes or path.startswith(tuple(prefixes)):
                            try:
                                tar.extract(member, partial, filter="data")
                            except tarfile.FilterError:  # absolute symlinks out of the package: not needed
                                continue
                break
            f.seek(size + (size & 1), 1)
        else:
            raise PackageUnavailableError(f"{deb.name} holds no data archive; delete it and rerun")
    partial.replace(target)


class _Slice:
    """A read-only window of `size` bytes over an open file: one `ar` member, streamed into tarfile."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        return data
