"""A/B in-process timing of secmw's middlewares on two source trees.

Each round runs one worker subprocess per tree (``PYTHONPATH=<tree>/src``), alternating which
tree goes first, so both see the same machine load. A worker builds every variant with the
builders of :mod:`benchmarks.inprocess_asgi` and :mod:`benchmarks.inprocess_wsgi` (public APIs
both trees share, so the apps are identical), checks their answers, then times them
interleaved: per variant, the best of a few batches, in microseconds per request. The report
gives, per tree and variant, the median over rounds, the spread (min-max) and the cost added to
the bare app (the median over rounds of the difference within each worker); a run of the
default size takes about a minute and a half::

    python -m benchmarks.ab --before /tmp/before --after . --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# (key, label, builder module, builder name); the first of each side is the bare app.
VARIANTS: list[tuple[str, str, str, str]] = [
    ("asgi_bare", "ASGI bare Starlette", "inprocess_asgi", "starlette"),
    ("asgi_ip", "ASGI IP filter", "inprocess_asgi", "secmw_ipfilter"),
    ("asgi_auth", "ASGI auth (cached)", "inprocess_asgi", "secmw_auth"),
    ("asgi_ratelimit", "ASGI rate limit (memory)", "inprocess_asgi", "secmw_ratelimit_memory"),
    ("asgi_headers", "ASGI headers", "inprocess_asgi", "secmw_headers"),
    ("asgi_layers", "ASGI four composed (memory)", "inprocess_asgi", "secmw_layers_memory"),
    ("asgi_stack", "ASGI SecurityStack (memory)", "inprocess_asgi", "secmw_stack_memory"),
    ("wsgi_bare", "WSGI bare Flask", "inprocess_wsgi", "flask"),
    ("wsgi_ip", "WSGI IP filter", "inprocess_wsgi", "secmw_ipfilter"),
    ("wsgi_auth", "WSGI auth (cached)", "inprocess_wsgi", "secmw_auth"),
    ("wsgi_ratelimit", "WSGI rate limit (memory)", "inprocess_wsgi", "secmw_ratelimit_memory"),
    ("wsgi_headers", "WSGI headers", "inprocess_wsgi", "secmw_headers"),
    ("wsgi_layers", "WSGI four composed (memory)", "inprocess_wsgi", "secmw_layers_memory"),
    ("wsgi_stack", "WSGI SecurityStack (memory)", "inprocess_wsgi", "secmw_stack_memory"),
]
BARE = {"inprocess_asgi": "asgi_bare", "inprocess_wsgi": "wsgi_bare"}


def _worker(batch: int, repeats: int, only: AbstractSet[str]) -> dict[str, float]:
    """Build, check and time every variant in this process; microseconds per request."""
    from benchmarks import inprocess_asgi, inprocess_wsgi
    from benchmarks.common import Context

    modules = {"inprocess_asgi": inprocess_asgi, "inprocess_wsgi": inprocess_wsgi}
    asgi, wsgi = inprocess_asgi.ASGIBench(), inprocess_wsgi.WSGIBench()
    benches: dict[str, Any] = {"inprocess_asgi": asgi, "inprocess_wsgi": wsgi}
    ctx = Context()
    runners = {}
    try:
        for key, _, module, name in _chosen(only):
            variant = next(v for v in modules[module].VARIANTS if v.key == name)
            app = variant.factory(ctx)
            problems = benches[module].check(variant, app)
            if problems:
                raise SystemExit(f"{key}: {'; '.join(problems)}")
            runners[key] = benches[module].runner(app)
            runners[key](batch)  # warm-up: caches, first-call imports
        best = {key: float("inf") for key in runners}
        for _ in range(repeats):
            for key, run in runners.items():
                best[key] = min(best[key], run(batch) / batch * 1e6)
        return best
    finally:
        asgi.close()
        ctx.close()


def _chosen(only: AbstractSet[str]) -> list[tuple[str, str, str, str]]:
    """The variants named in ``only`` (all when empty), with the bare app of their side."""
    if not only:
        return VARIANTS
    wanted = only | {BARE[module] for key, _, module, _ in VARIANTS if key in only}
    return [row for row in VARIANTS if row[0] in wanted]


def _run_tree(tree: Path, batch: int, repeats: int, only: AbstractSet[str]) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree.resolve() / "src")}
    command = [sys.executable, "-m", "benchmarks.ab", "--worker"]
    command += ["--batch", str(batch), "--repeats", str(repeats), "--only", ",".join(only)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker on {tree} failed:\n{done.stderr}{done.stdout}")
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def measure(
    trees: dict[str, Path],
    rounds: int,
    batch: int,
    repeats: int,
    only: AbstractSet[str] = frozenset(),
) -> dict[str, Any]:
    """Per tree and variant: the round results, median, spread and cost added to the bare app."""
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    names = list(trees)
    for index in range(rounds):
        order = names if index % 2 == 0 else names[::-1]
        for name in order:
            for key, value in _run_tree(trees[name], batch, repeats, only).items():
                samples[name].setdefault(key, []).append(value)
    report: dict[str, Any] = {"rounds": rounds, "batch": batch, "repeats": repeats, "trees": {}}
    for name, per_variant in samples.items():
        rows = {}
        for key, values in per_variant.items():
            rows[key] = {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
                "samples": values,
            }
        for key, _, module, _ in _chosen(only):
            # Taken within each worker, so a slower or faster process cancels out.
            bare = per_variant[BARE[module]]
            added = [value - floor for value, floor in zip(per_variant[key], bare, strict=True)]
            rows[key]["added"] = statistics.median(added)
        report["trees"][name] = {"path": str(trees[name]), "variants": rows}
    return report


def table(report: dict[str, Any]) -> str:
    """The report as text: per variant, each tree's median [min-max] and added cost, in µs,
    then the change in added cost from the first tree to the second."""
    trees = report["trees"]
    names = list(trees)
    head = f"{'variant (µs per request)':30}"
    head += "".join(f" | {name + ': median [min-max] +added':>34}" for name in names)
    lines = [head + (" | change" if len(names) == 2 else "")]
    for key, label, _, _ in VARIANTS:
        if key not in trees[names[0]]["variants"]:
            continue
        rows = [trees[name]["variants"][key] for name in names]
        line = f"{label:30}"
        for row in rows:
            cell = f"{row['median']:.2f} [{row['min']:.2f}-{row['max']:.2f}] +{row['added']:.2f}"
            line += f" | {cell:>34}"
        if len(rows) == 2:
            line += f" | {rows[1]['added'] - rows[0]['added']:+.2f}"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__)
    parser.add_argument("--before", type=Path, help="the tree measured as 'before'")
    parser.add_argument("--after", type=Path, default=ROOT, help="the tree measured as 'after'")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2000, help="requests per timed batch")
    parser.add_argument("--repeats", type=int, default=3, help="batches per variant per round")
    parser.add_argument("--only", default="", help="comma-separated variant keys (default: all)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    only = {key for key in args.only.split(",") if key}
    unknown = only - {key for key, *_ in VARIANTS}
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    if args.worker:
        print(json.dumps(_worker(args.batch, args.repeats, only)))
        return 0
    if args.before is None:
        parser.error("--before is required")
    trees = {"before": args.before, "after": args.after}
    report = measure(trees, args.rounds, args.batch, args.repeats, only)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    print(table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
