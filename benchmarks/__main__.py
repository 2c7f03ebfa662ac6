"""Entry point: run every figure group, print one table, optionally write JSON.

``--quick`` is the smoke test the test suite runs: one run each, no warm-up, smallest
sizes, one example, no Kale 2.3.0 venv. It checks that the harness works, not speed.
Targets that are missed do not change the exit code: this is a report, and a slow
shared machine must not fail a build. The exit code is non-zero only if the harness
itself breaks.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from . import check, common, conversion, kale_runs, local_run, marshal, report

GROUPS = ("conversion", "scaling", "local run", "report", "marshalling", "run-time check", "memory")


@dataclasses.dataclass
class Context:
    """What every figure group needs: how many runs, which examples, where to log."""

    quick: bool
    runs: int
    warmup: int
    no_kale: bool
    examples: list

    @staticmethod
    def log(message):
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pick_examples(quick):
    """All examples/*.ipynb present now; with --quick only the stdlib one (or the
    smallest), to keep the smoke test short."""
    found = common.examples()
    if not quick or not found:
        return found
    stdlib = [p for p in found if p.name == local_run.STDLIB_EXAMPLE]
    return stdlib or [min(found, key=lambda p: p.stat().st_size)]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: one run each, smallest sizes, no Kale baseline")
    parser.add_argument("--runs", type=int, default=5,
                        help="measured runs per figure after one warm-up (median; default 5)")
    parser.add_argument("--no-kale", action="store_true",
                        help="skip the Kale 2.3.0 baseline (and its venv)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--keep-files", action="store_true",
                        help="keep the generated notebooks/scripts under benchmarks/results/work/")
    args = parser.parse_args(argv)

    ctx = Context(quick=args.quick, runs=1 if args.quick else max(1, args.runs),
                  warmup=0 if args.quick else 1, no_kale=args.no_kale,
                  examples=pick_examples(args.quick))
    options = ("quick: 1 run, no warm-up" if ctx.quick
               else f"median of {ctx.runs} runs after {ctx.warmup} warm-up")
    info = common.machine_info()
    started = time.perf_counter()
    ctx.log(f"examples: {', '.join(p.name for p in ctx.examples) or 'none found'}")

    results = []
    groups = {
        "conversion": lambda: conversion.run(ctx),
        "local_run": lambda: local_run.run(ctx),
        "report": lambda: report.run(ctx),
        "kale_runs": lambda: kale_runs.local_run(ctx),  # Kale 2.3.0's pipeline on kfp.local
        "marshal": lambda: marshal.run(ctx.quick, kale=kale_runs.marshal_baseline(ctx)),
        "check": lambda: check.run(ctx.quick),
    }
    for name, run_group in groups.items():
        try:
            results += run_group()
        except Exception as error:  # one broken group must not hide the others
            results.append(common.unavailable(name, f"{name} figures", "", "s",
                                              f"harness error: {type(error).__name__}: {error}"))
    order = {g: i for i, g in enumerate(GROUPS)}
    results.sort(key=lambda r: order.get(r.group, len(order)))

    header = common.format_header(info, options)
    table = common.format_table(results)
    print(header)
    print()
    print(table)
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    (common.RESULTS / ("latest-quick.md" if ctx.quick else "latest.md")).write_text(
        f"{header}\n\n{table}\n")
    if args.json:
        common.write_json(args.json, info, options, results)
    if not args.keep_files:
        common.remove_scratch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
