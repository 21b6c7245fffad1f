"""Every atheris harness in tests/fuzz/ survives a short seeded session (the CI fuzzing run)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from tests.fuzz import run as fuzz

RUNS = 2000
SEED = 1


@pytest.fixture(scope="module")
def sessions(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Future[tuple[int, float, str]]]]:
    """Start every harness, two at a time (one per core), while the tests wait for theirs."""
    if importlib.util.find_spec("atheris") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("atheris is required in CI: pip install -e '.[fuzz]'")
        pytest.skip("atheris is not installed: pip install -e '.[fuzz]'")
    artifacts = tmp_path_factory.mktemp("fuzz-artifacts")
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {name: pool.submit(fuzz.run, name, RUNS, SEED, artifacts) for name in fuzz.HARNESSES}


def test_every_parser_has_a_harness() -> None:
    """The harness list covers each parser that reads request bytes."""
    assert set(fuzz.HARNESSES) >= {
        "fuzz_authorization",
        "fuzz_jwt",
        "fuzz_basic",
        "fuzz_apikey",
        "fuzz_cookies_query",
        "fuzz_paths",
        "fuzz_forwarded",
        "fuzz_ratelimit_keys",
    }


@pytest.mark.parametrize("name", fuzz.HARNESSES)
def test_fuzz_harness_short_seeded_run_finds_nothing(
    name: str, sessions: dict[str, Future[tuple[int, float, str]]]
) -> None:
    """2,000 inputs with seed 1: the harness exits 0 after running them all."""
    code, _, output = sessions[name].result(timeout=300)
    assert code == 0, output[-4000:]
    assert f"Done {RUNS} runs" in output
