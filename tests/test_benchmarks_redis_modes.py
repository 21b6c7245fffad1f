"""The Redis-modes benchmark: its apps answer the benchmark token in each mode, its report renders.

No timing is asserted.
"""

from __future__ import annotations

from typing import Any

import pytest
from benchmarks import inprocess_asgi, redis_modes, report
from benchmarks.common import TOKEN

from secmw.ratelimit.leasing import AsyncLeasedWindows

pytestmark = pytest.mark.redis


@pytest.mark.parametrize("mode", ["bare", "memory", "exact", "leased"])
def test_each_mode_serves_the_benchmark_request(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, mode: str
) -> None:
    """The served app of each mode answers 200 to the benchmark token; leased mode leases."""
    monkeypatch.setenv("BENCH_MODE", mode)
    monkeypatch.setenv("BENCH_REDIS_URL", redis_url)
    monkeypatch.setenv("BENCH_PREFIX", f"smoke-{mode}")
    monkeypatch.setenv("BENCH_LIMIT", "1000/minute")
    app = redis_modes.asgi_app()
    bench = inprocess_asgi.ASGIBench()
    try:
        assert bench.call(app, inprocess_asgi.http_scope()).status == 200
        if mode == "leased":
            assert isinstance(app.layers["rate_limit"].limiter.remote, AsyncLeasedWindows)
    finally:
        bench.close()
    wsgi = redis_modes.wsgi_app()
    assert (
        wsgi.test_client().get("/", headers={"Authorization": "Bearer " + TOKEN}).status_code == 200
    )


def test_the_section_renders_with_its_goals() -> None:
    """A recorded section renders its three tables, and the Redis goals are checked."""
    row = {"rps": 100.0, "reads_per_request": 0.06, "evalsha_per_request": 1.0, "non_2xx": 0}
    section: dict[str, Any] = {
        "pipeline": {
            "threads, 32 callers": {"calls": 64, "round_trips": 4, "round_trips_per_call": 0.062}
        },
        "results": {
            "asgi:bare:1w": {**row, "rps_ratio": 1.0},
            "asgi:exact:1w": {**row, "rps_ratio": 0.5},
            "asgi:leased:1w": {**row, "rps_ratio": 0.6},
        },
        "exactness": {"exact": {"limit": 2000, "admitted": 2000}},
    }
    text = redis_modes.markdown(section)
    assert "| asgi:exact:1w | 100 | 0.5 | 0.060 | 1.000 | 0 |" in text
    assert "| threads, 32 callers | 64 | 4 | 0.062 |" in text
    assert "| exact | 2000 | 2000 |" in text
    targets = {t["key"]: t["status"] for t in report.check_targets({"redis": section})}
    assert targets["redis:asgi:exact:1w"] == "met"
    assert targets["redis:asgi:leased:1w"] == "missed"
    assert targets["redis:asgi:exact:2w"] == "n/a"
