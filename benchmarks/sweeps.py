"""A shipped sweep (sbts/sweep/named) run and written into its section of docs/benchmarks.md by ``sbts report``.

    python benchmarks/sweeps.py benchmark-classification --section classification --workers 2
    python benchmarks/sweeps.py paper-classification --section classification-paper --workers 2

The same as ``sbts reproduce NAME --workers N --threads 1`` followed by ``sbts report``: the tables and figures
are the report's, with the command and the machine above them. The runs stay in ``sweeps/NAME`` (re-running
finishes an interrupted sweep, or only rewrites the section of a finished one). Figures go beside the page as
``benchmarks-SECTION-pareto.png`` and ``-density.png``; the report's JSON as ``benchmarks-SECTION.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info, machine_line, replace_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="a shipped sweep (sbts reproduce --list)")
    parser.add_argument("--section", required=True, help="the section of the output file to replace")
    parser.add_argument("--quick", action="store_true", help="the sweep's quick variant")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--out", type=Path, help="the sweep's directory (default: sweeps/NAME)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()

    from sbts.atomic import atomic_write_bytes
    from sbts.report.sweep_report import build_report
    from sbts.sweep import named_spec_path, read_spec, run_sweep
    from sbts.sweep.study import read_results

    spec = read_spec(named_spec_path(args.name, quick=args.quick))
    out = args.out or ROOT / "sweeps" / spec.name
    info = machine_info()
    start = time.perf_counter()
    run_sweep(spec, out, workers=args.workers, threads=args.threads)
    wall = time.perf_counter() - start
    results = read_results(out)
    training = sum(record["train_seconds"] or 0.0 for record in results.records)
    page = args.output.parent / f"benchmarks-{args.section}.md"  # names the figures; the page itself is the section
    text, document, _ = build_report(results, page)
    command = (f"SBTS_DATA_DIR=../shared/data python benchmarks/sweeps.py {args.name} --section {args.section} "
               f"--workers {args.workers}" + (" --quick" if args.quick else "")
               + ("" if args.threads == 1 else f" --threads {args.threads}"))
    header = (f"Command: `{command}` (= `sbts reproduce {args.name}{' --quick' if args.quick else ''} --workers "
              f"{args.workers} --threads {args.threads}`, then `sbts report`)\n"
              f"Machine: {machine_line(info)}; {args.workers} workers, {args.threads} torch thread(s) each; the "
              f"{len(results.records)} runs trained for {training / 60:.1f} min in all (epochs and validation "
              f"passes); this invocation's wall time {wall / 60:.1f} min (runs finished before it are read back, "
              "not rerun).\n\n")
    heading, _, body = text.partition("\n")
    replace_section(args.output, args.section, f"{heading}\n\n{header}{body.lstrip()}")
    atomic_write_bytes(page.with_suffix(".json"), json.dumps({"machine": info, **document}, indent=1).encode())
    print(text)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
