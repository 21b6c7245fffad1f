"""Run every fuzz harness for a bounded number of inputs with a fixed seed (``make fuzz``, CI).

    python tests/fuzz/run.py                      # 20,000 inputs per harness, seed 1
    python tests/fuzz/run.py --runs 500000 --seed 7 fuzz_jwt

A harness that finds a failing input exits non-zero; libFuzzer writes the input to
``--artifacts`` (``crash-<sha1>``), and ``python tests/fuzz/fuzz_X.py <that file>`` replays it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESSES = sorted(path.stem for path in HERE.glob("fuzz_*.py"))
MAX_LEN = 8192  # bytes per input: well past every size limit the parsers enforce


def command(name: str, runs: int, seed: int, artifacts: Path) -> list[str]:
    """The libFuzzer command line for one harness."""
    return [
        sys.executable,
        str(HERE / f"{name}.py"),
        f"-runs={runs}",
        f"-seed={seed}",
        f"-max_len={MAX_LEN}",
        "-len_control=0",  # long inputs from the start: short runs still reach size limits
        "-timeout=30",  # seconds per input: a hang is a finding
        "-rss_limit_mb=2048",
        f"-artifact_prefix={artifacts}/{name}-",
    ]


def run(name: str, runs: int, seed: int, artifacts: Path) -> tuple[int, float, str]:
    """Run one harness; return its exit code, duration and libFuzzer's output."""
    started = time.perf_counter()
    done = subprocess.run(
        command(name, runs, seed, artifacts),
        cwd=HERE,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode, time.perf_counter() - started, done.stdout + done.stderr


def main(argv: list[str] | None = None) -> int:
    """Run the harnesses named on the command line (all by default); 1 if any failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("harness", nargs="*", help=f"any of {', '.join(HARNESSES)}")
    parser.add_argument("--runs", type=int, default=20_000, help="inputs per harness")
    parser.add_argument("--seed", type=int, default=1, help="libFuzzer seed")
    parser.add_argument("--artifacts", type=Path, help="where failing inputs are written")
    args = parser.parse_args(argv)
    unknown = set(args.harness) - set(HARNESSES)
    if unknown:
        parser.error(f"unknown harness(es): {', '.join(sorted(unknown))}")
    artifacts = args.artifacts or Path(tempfile.mkdtemp(prefix="secmw-fuzz-"))
    artifacts.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in args.harness or HARNESSES:
        code, seconds, output = run(name, args.runs, args.seed, artifacts)
        coverage = next(
            (line.split("cov:")[1].split()[0] for line in output.splitlines() if "DONE" in line),
            "?",
        )
        print(f"{name:<24} exit {code:>3}  {args.runs} runs  cov {coverage:>4}  {seconds:5.1f} s")
        if code != 0:
            failed.append(name)
            print(output[-4000:], file=sys.stderr)
    if failed:
        print(f"failing inputs are in {artifacts}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
