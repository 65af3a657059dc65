"""Vendoring the npm-installed browser dependencies into frontend/static/vendor/, and the serve command."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from backend.vendor import FILES, vendor
from pipelines.cli import app as cli


def test_vendor_copies_every_file(tmp_path: Path) -> None:
    for source in FILES:
        (tmp_path / source).parent.mkdir(parents=True)
        (tmp_path / source).write_text("/* htmx */")
    copied = vendor(root=tmp_path, target=tmp_path / "vendor")
    assert sorted(p.name for p in copied) == sorted(FILES.values())
    assert all(p.read_text() == "/* htmx */" for p in copied)


def test_vendor_without_npm_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="npm ci"):
        vendor(root=tmp_path, target=tmp_path / "vendor")


def test_serve_is_a_cli_command() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0 and "--atlas" in result.output and "--port" in result.output
