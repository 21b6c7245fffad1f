"""The wheel and sdist build, install into a clean virtual environment, and import."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.server
def test_wheel_and_sdist_install_and_import(tmp_path: Path) -> None:
    """python -m build makes both artifacts; each installs in a fresh venv and imports."""
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    wheels = list(dist.glob("secmw-*.whl"))
    sdists = list(dist.glob("secmw-*.tar.gz"))
    assert len(wheels) == 1
    assert len(sdists) == 1
    pythons = []
    installs = []
    for artifact in (wheels[0], sdists[0]):  # both installs run at once: they are independent
        env = tmp_path / f"venv-{artifact.suffix}"
        venv.create(env, with_pip=True)
        python = env / "bin" / "python"
        pythons.append(python)
        installs.append(
            subprocess.Popen(
                [str(python), "-m", "pip", "install", "--quiet", str(artifact)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
    for install in installs:
        _, err = install.communicate(timeout=300)
        assert install.returncode == 0, err.decode()[-2000:]
    for python in pythons:
        out = subprocess.run(
            [
                str(python),
                "-c",
                "import secmw, secmw.asgi, secmw.wsgi; print(secmw.__version__,"
                " secmw.asgi.AuthenticationMiddleware.__name__)",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        assert out.stdout.split() == [secmw_version(), "AuthenticationMiddleware"]


@pytest.mark.server
def test_redis_extra_resolves_the_newest_redis_py(tmp_path: Path) -> None:
    """secmw[redis] puts no upper cap on redis-py and pulls in no other Redis client: a dry-run
    install (resolution only, as in an empty environment) picks the index's newest redis-py."""
    pip = [sys.executable, "-m", "pip"]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    index = subprocess.run(
        [*pip, "index", "versions", "redis"], capture_output=True, text=True, env=env, timeout=120
    )
    found = re.search(r"^redis \(([^)]+)\)", index.stdout, re.MULTILINE)
    if index.returncode != 0 or found is None:
        pytest.skip("the package index cannot be reached")
    report = tmp_path / "report.json"
    subprocess.run(
        [
            *pip,
            "install",
            "--dry-run",
            "--ignore-installed",  # resolve as a clean environment would
            "--no-build-isolation",  # secmw's metadata comes from the hatchling installed here
            "--quiet",
            "--report",
            str(report),
            f"{ROOT}[redis]",
        ],
        check=True,
        capture_output=True,
        env=env,
        timeout=300,
    )
    resolved = {
        item["metadata"]["name"].lower(): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    assert resolved["redis"] == found.group(1)
    assert "coredis" not in resolved


def secmw_version() -> str:
    import secmw

    return secmw.__version__
