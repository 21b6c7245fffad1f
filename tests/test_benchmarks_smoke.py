"""The benchmark harness: every stack it measures answers as expected, and its reports render.

No timing is asserted. Each in-process variant is built, checked (200 ``ok`` for the valid token,
401 without a token where the stack authenticates, security headers where it adds them) and run
a handful of times, so a benchmark never silently measures a refusal. Variants whose packages or
secmw layers are missing are skipped with the harness's reason.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from benchmarks import http_load, inprocess_asgi, inprocess_wsgi, report, run
from benchmarks.common import Context, Skip, Variant, build, redis_server, summarize


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A private redis-server for the Redis variants."""
    with redis_server() as server:
        if server is None:
            pytest.skip("redis-server is not installed")
        yield server.url


def _params(variants: list[Variant]) -> list[Any]:
    return [
        pytest.param(v, id=v.key, marks=[pytest.mark.redis] if v.redis else []) for v in variants
    ]


def _context(variant: Variant, request: pytest.FixtureRequest) -> Context:
    return Context(redis_url=request.getfixturevalue("redis_url") if variant.redis else None)


def _build_or_skip(variant: Variant, ctx: Context) -> Any:
    try:
        return build(variant, ctx)
    except Skip as exc:
        pytest.skip(f"{variant.key}: {exc}")


@pytest.mark.parametrize("variant", _params(inprocess_asgi.VARIANTS))
def test_asgi_variant_answers_as_expected(variant: Variant, request: pytest.FixtureRequest) -> None:
    """An ASGI stack answers 200 to the benchmark token (401 without it) before and after a run."""
    ctx = _context(variant, request)
    bench = inprocess_asgi.ASGIBench()
    try:
        app = _build_or_skip(variant, ctx)
        assert bench.check(variant, app) == []
        run = bench.runner(app)
        assert run(5) > 0
        assert bench.call(app, inprocess_asgi.http_scope()).status == 200
    finally:
        bench.close()
        ctx.close()


@pytest.mark.parametrize("variant", _params(inprocess_wsgi.VARIANTS))
def test_wsgi_variant_answers_as_expected(variant: Variant, request: pytest.FixtureRequest) -> None:
    """A WSGI stack answers 200 to the benchmark token (401 without it) before and after a run."""
    ctx = _context(variant, request)
    bench = inprocess_wsgi.WSGIBench()
    try:
        app = _build_or_skip(variant, ctx)
        assert bench.check(variant, app) == []
        run = bench.runner(app)
        assert run(5) > 0
        assert bench.call(app, inprocess_wsgi.environ()).status == 200
    finally:
        bench.close()
        ctx.close()


def test_check_catches_a_stack_that_refuses_the_token() -> None:
    """A stack answering 401 to the valid token is reported, not measured."""

    async def refuse(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    variant = Variant("refuse", "refuses", "secmw", lambda ctx: refuse, auth=True)
    bench = inprocess_asgi.ASGIBench()
    try:
        problems = bench.check(variant, refuse)
    finally:
        bench.close()
    assert problems == ["valid token answered 401 b''"]


def test_check_catches_a_stack_that_lets_anonymous_requests_in() -> None:
    """An authenticating stack that answers 200 without a token is reported, not measured."""
    variant = Variant("open", "open", "secmw", lambda ctx: inprocess_asgi.raw_app, auth=True)
    bench = inprocess_asgi.ASGIBench()
    try:
        problems = bench.check(variant, inprocess_asgi.raw_app)
    finally:
        bench.close()
    assert problems == ["request without a token answered 200, not 401"]


def test_summary_ratios_are_taken_within_rounds() -> None:
    """Ratios are medians of per-round ratios, so a slow round slows the baseline alike."""
    samples = {
        "base": {"us": [10.0, 20.0, 10.0], "cpu": [5.0, 5.0, 5.0]},
        "stack": {"us": [15.0, 30.0, 15.0], "cpu": [10.0, 10.0, 10.0]},
    }
    summary = summarize(samples, "base")
    assert summary["stack"]["ratio"] == 1.5
    assert summary["stack"]["added"] == 0.5
    assert summary["stack"]["cpu_ratio"] == 2.0
    assert summary["stack"]["us"] == 15.0


WRK_OUTPUT = """Running 2s test @ http://127.0.0.1:40000/
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   620.00us  100.00us   3.00ms   90.00%
  Latency Distribution
     50%  610.00us
     75%  700.00us
     90%  800.00us
     99%    1.50ms
  12000 requests in 2.00s, 1.50MB read
  Non-2xx or 3xx responses: 3
Requests/sec:   6000.00
"""


def test_wrk_output_is_parsed() -> None:
    """Requests, seconds, p50/p99 (units converted to ms) and non-2xx come from wrk's output."""
    load = http_load.parse_wrk(WRK_OUTPUT)
    assert (load.requests, load.seconds, load.non_2xx) == (12000, 2.0, 3)
    assert load.p50_ms == pytest.approx(0.61)
    assert load.p99_ms == pytest.approx(1.5)
    assert load.rps == 6000


def _results() -> dict[str, Any]:
    machine = {
        "date": "2026-01-01T00:00:00+0000", "cpu": "test cpu", "cores": 2, "python": "3.11",
        "implementation": "CPython", "load_before": [0.5], "load_after": [0.5],
    }  # fmt: skip
    ok = {"status": "ok", "us": 10.0, "us_p25": 9.0, "us_p75": 11.0, "cpu_us": 9.0}
    return {
        "machine": machine,
        "settings": {"quick": True, "limit": "1/s", "strategy": "fixed-window", "rounds": 3,
                     "http_rounds": 1},
        "asgi": {"results": {
            "starlette": {**ok, "label": "bare Starlette", "kind": "baseline", "ratio": 1.0},
            "secmw_stack_memory": {**ok, "label": "stack", "kind": "secmw", "us": 15.0,
                                   "ratio": 1.5, "added": 0.5},
            "secmw_stack_redis": {"label": "stack redis", "kind": "secmw", "status": "n/a",
                                  "reason": "no redis-server on this machine"},
        }},
    }  # fmt: skip


def test_report_writes_json_and_markdown(tmp_path: Path) -> None:
    """The run lands in latest.json and latest.md, with the targets and the n/a reasons."""
    written = report.write(_results(), tmp_path, chart=False)
    assert sorted(p.name for p in written) == ["latest.json", "latest.md"]
    data = json.loads((tmp_path / "latest.json").read_text())
    stack_target = next(t for t in data["targets"] if t["key"] == "asgi:secmw_stack_memory")
    assert (stack_target["status"], stack_target["stretch_met"]) == ("met", True)
    markdown = (tmp_path / "latest.md").read_text()
    assert "| stack | 15.0 |" in markdown
    assert "n/a: no redis-server on this machine" in markdown


def test_report_draws_the_chart(tmp_path: Path) -> None:
    """With matplotlib installed, latest.png is a PNG."""
    pytest.importorskip("matplotlib")
    path = report.plot(_results(), tmp_path / "latest.png")
    assert path is not None
    assert path.read_bytes().startswith(b"\x89PNG")


@pytest.mark.server
def test_each_uvicorn_parser_serves_a_group_of_its_own() -> None:
    """Bare Starlette under every installed uvicorn parser: each answers the load with 200s and
    is the baseline of its own group (ratios never mix parsers)."""
    base = next(v for v in inprocess_asgi.VARIANTS if v.key == inprocess_asgi.BASELINE)
    groups = sorted({g for g, _ in http_load.http_variants() if g in http_load.ASGI_PARSERS})
    has_httptools = importlib.util.find_spec("httptools") is not None
    assert groups == ["asgi", "asgi-httptools"] if has_httptools else ["asgi"]
    section = http_load.run_http(
        [(group, base) for group in groups],
        rounds=1, seconds=1, redis_url=None, redis_pid=None, log=lambda _: None,
    )  # fmt: skip
    for group in groups:
        entry = section["results"][f"{group}:{base.key}"]
        assert entry["status"] == "ok", entry
        assert entry["server"] == f"uvicorn ({http_load.ASGI_PARSERS[group]})"
        assert entry["rps"] > 0
        assert entry["non_2xx"] == 0
        assert entry["rps_ratio"] == 1.0


def test_the_floor_does_the_stacks_work_on_the_benchmark_request() -> None:
    """The floor answers the benchmark's request as the stack does: same status, same response
    fields (so its figure is the same work without the generality), and its runs (ASGI, and the
    WSGI interference measurement) yield a figure for every variant."""
    from benchmarks import floor

    from secmw.asgi import SecurityStack

    stack = SecurityStack(inprocess_asgi.raw_app, **inprocess_asgi.secmw_sections())
    fast = floor.floor_of(stack, inprocess_asgi.raw_app)
    bench = inprocess_asgi.ASGIBench()
    try:
        ours = bench.call(stack, inprocess_asgi.http_scope())
        theirs = bench.call(fast, inprocess_asgi.http_scope())
    finally:
        bench.close()
    assert ours.status == theirs.status == 200
    assert sorted(theirs.headers) == sorted(ours.headers)
    assert theirs.headers["ratelimit-policy"] == ours.headers["ratelimit-policy"]
    figures = floor.measure(repeats=1, batch=3)
    assert set(figures) == {
        *("raw", "starlette", "stack", "floor", "stack_raw", "sequence"),
        *("starlette_cold", "stack_cold"),
    }
    assert all(value > 0 for value in figures.values())
    wsgi = floor.measure_wsgi(repeats=1, batch=3)
    assert set(wsgi) == {"raw", "flask", "stack", "stack_raw", "sequence"}
    assert all(value > 0 for value in wsgi.values())


def test_a_recorded_run_with_compiled_build_rows_still_renders(tmp_path: Path) -> None:
    """A results file recorded while a compiled build existed keeps its extra sections, but the
    targets and the Markdown cover only the build measured now, and no option asks for it."""
    results = _results()
    results["asgi-compiled"] = {"results": dict(results["asgi"]["results"])}
    targets = report.check_targets(results)
    assert "asgi:secmw_stack_memory" in {t["key"] for t in targets}
    assert not [t for t in targets if "compiled" in t["key"] or "compiled" in t["target"]]
    markdown = report.markdown(dict(results, targets=targets))
    assert "## In-process ASGI (" in markdown
    assert "compiled build" not in markdown
    with pytest.raises(SystemExit):
        run.parse_args(["--compiled", str(tmp_path)])
    assert {g for g, _ in http_load.http_variants()} <= {*http_load.ASGI_PARSERS, "wsgi"}


@pytest.mark.redis
def test_the_raw_round_trip_floor_runs_the_script(redis_url: str) -> None:
    """The Redis floor row sends the script call the middleware would and reads its whole reply:
    each call counts one unit in Redis, and the stream is left at a reply boundary."""
    import asyncio

    import redis
    from benchmarks import bench_ratelimit

    from secmw.asgi.ratelimit import RateLimitMiddleware

    settings = {"storage_uri": redis_url, "default": "1000/hour", "strategy": "fixed-window"}
    floor = bench_ratelimit.RawRoundTrip(
        redis_url, RateLimitMiddleware(inprocess_asgi.raw_app, rate_limit=settings)
    )

    async def three() -> None:
        for _ in range(3):
            await floor(next(bench_ratelimit.scopes(1)))
        floor.close()

    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()
        asyncio.run(three())
        counts = [int(client.get(key)) for key in client.keys("*")]
    assert counts == [3]


@pytest.mark.redis
def test_the_reset_request_rows_time_both_accounts_on_both_stores(redis_url: str) -> None:
    """The password-reset rows of bench_auth time an existing and an unknown account on memory
    and Redis, and the unknown account's requests really write to the store (decoys), so the row
    compares equal work; no timing is asserted."""
    import redis
    from benchmarks import bench_auth

    with redis.Redis.from_url(redis_url) as client:
        before = client.info("commandstats").get("cmdstat_sadd", {}).get("calls", 0)
        rows = bench_auth.reset_request_rows(repeats=1, batch=3, redis_url=redis_url)
        after = client.info("commandstats").get("cmdstat_sadd", {}).get("calls", 0)
    assert [row["store"] for row in rows] == ["memory", "redis"]
    for row in rows:
        assert row["existing_account_us"] > 0
        assert row["unknown_account_us"] > 0
    assert after - before == 6  # three requests per account, each one group write


def test_the_ab_run_reports_every_variant_for_both_trees(tmp_path: Path) -> None:
    """The A/B timing runs a worker per tree and reports median, spread and added cost for
    every variant of both sides (here the same tree twice, one tiny batch)."""
    from benchmarks import ab

    root = Path(ab.__file__).resolve().parent.parent
    out = tmp_path / "ab.json"
    argv = ["--before", str(root), "--after", str(root), "--rounds", "1", "--batch", "3"]
    assert ab.main([*argv, "--repeats", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["trees"]) == {"before", "after"}
    for tree in result["trees"].values():
        rows = tree["variants"]
        assert set(rows) == {key for key, *_ in ab.VARIANTS}
        for row in rows.values():
            assert len(row["samples"]) == 1
            assert 0 < row["min"] <= row["median"] <= row["max"]
        assert rows["asgi_bare"]["added"] == rows["wsgi_bare"]["added"] == 0
    lines = ab.table(result).splitlines()
    assert len(lines) == 1 + len(ab.VARIANTS)
    assert all(" | " in line for line in lines)
