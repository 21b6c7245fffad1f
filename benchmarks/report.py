"""Write a run's results: ``latest.json``, a Markdown table ``latest.md``, a chart ``latest.png``.

The JSON holds everything (machine, settings, per-variant medians, quartiles, ratios, Redis
calls, HTTP figures, the reasons for "n/a"); the Markdown and the chart are views of it. The
performance goals are checked against the same run and listed with the figure they depend on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import redis_modes

X = "\N{MULTIPLICATION SIGN}"
DASH = "\N{EN DASH}"
RESULTS = Path(__file__).resolve().parent / "results"
COMPONENTS = ("ipfilter", "ratelimit", "auth", "floor")
"""Result files of the per-component benchmarks, embedded in ``latest.json`` when present."""

# (label, section, key, field, comparison, target, stretch)
TARGETS: list[tuple[str, str, str, str, str, float, float | None]] = [
    ("ASGI full SecurityStack (memory), x bare Starlette", "asgi", "secmw_stack_memory", "ratio",
     "<=", 2.0, 1.6),
    ("ASGI authentication alone (token cache), added x Starlette", "asgi", "secmw_auth", "added",
     "<=", 0.2, None),
    ("ASGI rate limit alone (memory), added x Starlette", "asgi", "secmw_ratelimit_memory",
     "added", "<=", 0.4, None),
    ("ASGI IP filter alone, added x Starlette", "asgi", "secmw_ipfilter", "added", "<=", 0.1,
     None),
    ("ASGI headers alone, added x Starlette", "asgi", "secmw_headers", "added", "<=", 0.1, None),
    ("HTTP uvicorn (h11), SecurityStack (memory), requests/s x bare Starlette", "http",
     "asgi:secmw_stack_memory", "rps_ratio", ">=", 0.8, None),
    ("HTTP uvicorn (h11), SecurityStack (Redis), requests/s x bare Starlette", "http",
     "asgi:secmw_stack_redis", "rps_ratio", ">=", 0.45, None),
    ("HTTP uvicorn (httptools), SecurityStack (memory), requests/s x bare Starlette", "http",
     "asgi-httptools:secmw_stack_memory", "rps_ratio", ">=", 0.8, None),
    ("HTTP uvicorn (httptools), SecurityStack (Redis), requests/s x bare Starlette", "http",
     "asgi-httptools:secmw_stack_redis", "rps_ratio", ">=", 0.45, None),
    ("WSGI full SecurityStack (memory), x bare Flask", "wsgi", "secmw_stack_memory", "ratio",
     "<=", 1.3, None),
    ("HTTP 32 connections, SecurityStack (Redis, exact), requests/s x bare Starlette", "redis",
     "asgi:exact:1w", "rps_ratio", ">=", 0.45, None),
    ("HTTP 32 connections, SecurityStack (Redis, leased), requests/s x bare Starlette", "redis",
     "asgi:leased:1w", "rps_ratio", ">=", 0.7, None),
    ("HTTP two uvicorn workers, one Redis (exact), requests/s x bare Starlette", "redis",
     "asgi:exact:2w", "rps_ratio", ">=", 0.45, None),
]  # fmt: skip


def write(results: dict[str, Any], directory: Path = RESULTS, *, chart: bool = True) -> list[Path]:
    """Write the three files; return their paths (the chart is left out without matplotlib)."""
    directory.mkdir(parents=True, exist_ok=True)
    results = dict(results, targets=check_targets(results))
    components = {}
    for name in COMPONENTS:
        path = directory / f"{name}.json"
        if path.exists():
            try:
                components[name] = json.loads(path.read_text())
            except ValueError:
                continue
    if components:
        results["components"] = components
    written = []
    json_path = directory / "latest.json"
    json_path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    written.append(json_path)
    md_path = directory / "latest.md"
    md_path.write_text(markdown(results))
    written.append(md_path)
    if chart:
        png = plot(results, directory / "latest.png")
        if png is not None:
            written.append(png)
    return written


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each performance goal with the measured figure: ``met``, ``missed`` or ``n/a``."""
    out = []
    for label, section, key, field, comparison, target, stretch in TARGETS:
        entry = results.get(section, {}).get("results", {}).get(key, {})
        value = entry.get(field)
        row: dict[str, Any] = {
            "target": label, "key": f"{section}:{key}", "field": field,
            "goal": f"{comparison} {target}", "value": value,
        }  # fmt: skip
        if value is None:
            row["status"] = "n/a"
            row["reason"] = entry.get("reason", "not measured in this run")
        else:
            ok = value <= target if comparison == "<=" else value >= target
            row["status"] = "met" if ok else "missed"
            if stretch is not None:
                row["stretch"] = f"{comparison} {stretch}"
                row["stretch_met"] = value <= stretch if comparison == "<=" else value >= stretch
        out.append(row)
    return out


# -- Markdown ---------------------------------------------------------------------------------


def _num(value: Any, digits: int = 1, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}{suffix}"


def _inprocess_table(section: dict[str, Any], base_label: str) -> list[str]:
    lines = [
        f"| stack | µs/request (median) | p25{DASH}p75 µs | {X} {base_label} "
        f"| added {X} {base_label} | CPU µs/request | CPU {X} {base_label} "
        "| Redis commands / round trips per request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in section["results"].values():
        if entry.get("status") != "ok":
            reason = entry.get("reason", "")
            lines.append(f"| {entry['label']} | {entry['status']}: {reason} | | | | | | |")
            continue
        added = entry.get("added") if entry["kind"] not in ("floor", "baseline") else None
        redis = (
            f"{entry['commands_per_request']:g} / {entry['round_trips_per_request']:g}"
            if "commands_per_request" in entry
            else ""
        )
        lines.append(
            f"| {entry['label']} | {_num(entry['us'])} | "
            f"{_num(entry['us_p25'])}{DASH}{_num(entry['us_p75'])} | "
            f"{_num(entry.get('ratio'), 2, X)} | {_num(added, 2, X)} | "
            f"{_num(entry['cpu_us'])} | {_num(entry.get('cpu_ratio'), 2, X)} | {redis} |"
        )
    return lines


def _http_table(section: dict[str, Any]) -> list[str]:
    lines = [
        f"| stack | server | requests/s | {X} bare framework | p50 ms | p99 ms "
        f"| server CPU µs/request | CPU {X} bare | Redis CPU µs/request | non-2xx |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in section["results"].values():
        if entry.get("status") != "ok":
            lines.append(
                f"| {entry['label']} | {entry.get('server', '')} | {entry.get('status')}: "
                f"{entry.get('reason', '')} | | | | | | | |"
            )
            continue
        lines.append(
            f"| {entry['label']} | {entry['server']} | {_num(entry['rps'], 0)} | "
            f"{_num(entry.get('rps_ratio'), 2, X)} | {_num(entry['p50_ms'], 2)} | "
            f"{_num(entry['p99_ms'], 2)} | {_num(entry['cpu_us'], 0)} | "
            f"{_num(entry.get('cpu_ratio'), 2, X)} | {_num(entry.get('redis_cpu_us'), 0)} | "
            f"{entry['non_2xx']} |"
        )
    return lines


def _targets_table(targets: list[dict[str, Any]]) -> list[str]:
    lines = ["| target | goal | measured | status |", "|---|---:|---:|---|"]
    for row in targets:
        value = _num(row["value"], 2) if row["value"] is not None else "—"
        status = row["status"]
        if row.get("stretch_met"):
            status += f" (stretch {row['stretch']} met)"
        elif status == "n/a":
            status += f": {row['reason']}"
        lines.append(f"| {row['target']} | {row['goal']} | {value} | {status} |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The run as Markdown: machine, one table per section, the targets."""
    m = results["machine"]
    s = results["settings"]
    lines = [
        "# secmw benchmarks: latest run",
        "",
        f"{m['date']}; commit {m.get('commit') or 'unknown'}; {m['cpu']}, {m['cores']} cores; "
        f"{m['implementation']} {m['python']}; "
        f"load average {m['load_before'][0]:g} before, {m.get('load_after', ['?'])[0]} after; "
        f"{'quick' if s['quick'] else 'full'} run, {results.get('duration_s', 0):.0f} s.",
        "",
        "Every figure comes from this one run: variants measured side by side, repeats interleaved "
        "(round-robin in a shuffled order), medians over rounds; ratios are medians of per-round "
        'ratios to the bare framework, so drift of a shared machine cancels. "added" is the '
        "stack's cost above the bare framework, as a fraction of the framework's own time. "
        f"Request: GET / with an HS256 bearer token; rate limit {s['limit']} ({s['strategy']}).",
        "",
    ]
    named: list[tuple[str, Callable[[dict[str, Any]], list[str]]]] = [
        ("asgi", lambda sec: _inprocess_table(sec, "Starlette")),
        ("wsgi", lambda sec: _inprocess_table(sec, "Flask")),
        ("http", _http_table),
    ]
    titles = {
        "asgi": f"In-process ASGI (`await app(scope, receive, send)`, {s['rounds']} rounds)",
        "wsgi": f"In-process WSGI (`app(environ, start_response)`, {s['rounds']} rounds)",
        "http": "Over HTTP (uvicorn one worker / gunicorn one gthread worker, loopback)",
    }
    for name, table in named:
        if name not in results:
            continue
        lines += [f"## {titles[name]}", ""]
        if results[name].get("reason"):
            lines += [f"n/a: {results[name]['reason']}", ""]
            continue
        if name == "http":
            h = results["http"]
            lines += [
                f"Load: {h['generator']}, {h['connections']} keep-alive connections, "
                f"{h['seconds']:g} s per round, {s['http_rounds']} rounds.",
                "",
            ]
        lines += [*table(results[name]), ""]
    if "redis" in results:
        title = "## Redis: exact and leased modes, pipelining"
        lines += [title, "", redis_modes.markdown(results["redis"]), ""]
    lines += ["## Goals", "", *_targets_table(results["targets"]), ""]
    return "\n".join(lines)


# -- chart ------------------------------------------------------------------------------------

COLORS = {"floor": "#9e9e9e", "baseline": "#607d8b", "peer": "#e07b39", "secmw": "#2e7d32"}


def plot(results: dict[str, Any], path: Path) -> Path | None:
    """Horizontal bars of each stack's ratio to its bare framework, one panel per section."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        return None
    panels = []
    for name, field, title in (
        (
            "asgi",
            "ratio",
            f"In-process ASGI: time per request {X} bare Starlette (lower is better)",
        ),
        ("wsgi", "ratio", f"In-process WSGI: time per request {X} bare Flask (lower is better)"),
        ("http", "rps_ratio", f"HTTP: requests/s {X} bare framework (higher is better)"),
    ):
        rows = [
            (f"{e['server']}: {e['label']}" if "server" in e else e["label"], e[field], e["kind"])
            for e in results.get(name, {}).get("results", {}).values()
            if e.get("status") == "ok" and e.get(field) is not None
        ]
        if rows:
            panels.append((title, rows, name != "http"))
    if not panels:
        return None
    heights = [0.6 + 0.32 * len(rows) for _, rows, _ in panels]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(11, sum(heights) + 0.8), gridspec_kw={"height_ratios": heights}
    )
    axes = [axes] if len(panels) == 1 else list(axes)
    for ax, (title, rows, log) in zip(axes, panels, strict=True):
        labels = [r[0] for r in rows][::-1]
        values = [r[1] for r in rows][::-1]
        colors = [COLORS.get(r[2], "#777777") for r in rows][::-1]
        positions = list(range(len(values)))  # numeric: equal labels must not share a bar
        ax.barh(positions, values, color=colors)
        ax.set_yticks(positions, labels)
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}{X}"))
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))  # no "2x10^0" labels
        ax.axvline(1.0, color="black", linewidth=0.8)
        for y, value in enumerate(values):
            ax.text(value, y, f" {value:.2f}{X}", va="center", fontsize=8)
        ax.set_title(title, fontsize=10, loc="left")
        ax.tick_params(axis="y", labelsize=8)
        ax.set_xlim(right=max(values) * (3 if log else 1.25))
    m = results["machine"]
    fig.suptitle(
        f"secmw vs peers — {m['cores']} cores, {m['cpu']}, Python {m['python']}, {m['date'][:10]}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
