"""One command for every benchmark: `python -m benchmarks [NAME ...] [-- ARGS]`.

Each `benchmarks/bench_<name>.py` defines `main(argv: list[str]) -> dict` that measures facedata against a
reference *in the same run* (these machines are noisy: report medians and ratios) and returns its results;
this runner prints them and writes `.bench/<name>.json`. Record the numbers in BENCHMARKS.md with the
command, the date and the machine.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import platform
import sys
import time
from pathlib import Path

import benchmarks


def available() -> list[str]:
    return sorted(
        m.name[len("bench_") :] for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_")
    )


def main(argv: list[str]) -> int:
    names, extra = argv, []
    if "--" in argv:
        i = argv.index("--")
        names, extra = argv[:i], argv[i + 1 :]
    if names in (["-h"], ["--help"]):
        print(__doc__)
        print("available:", ", ".join(available()))
        return 0
    unknown = set(names) - set(available())
    if unknown:
        print(f"unknown benchmark(s) {sorted(unknown)}; available: {', '.join(available())}", file=sys.stderr)
        return 2
    out_dir = Path(".bench")
    out_dir.mkdir(exist_ok=True)
    for name in names or available():
        module = importlib.import_module(f"benchmarks.bench_{name}")
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        print(f"== benchmark {name} ({started})", flush=True)
        result = module.main(extra)
        result = {
            "benchmark": name,
            "date": started,
            "machine": f"{platform.node()} {platform.machine()}, {platform.python_version()}",
            **result,
        }
        (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
