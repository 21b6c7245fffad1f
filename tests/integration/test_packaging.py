"""The wheel and sdist build, install into a clean virtual environment, and import."""

from __future__ import annotations

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


def secmw_version() -> str:
    import secmw

    return secmw.__version__
