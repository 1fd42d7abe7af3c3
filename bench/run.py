"""Run the benchmarks and write their results to ``docs/benchmarks.md``.

    python -m bench.run                  # all of them, full sizes (a few minutes), updates the doc
    python -m bench.run poll memory      # just these; the other rows of the doc are kept
    python -m bench.run --quick          # smaller sizes, prints only (add --write to record them)
    python -m bench.run --list

Every benchmark writes its data under a fresh temporary directory (``--tmp`` to choose where) and
removes it afterwards. The exit status is 1 when a goal was missed, 2 when a benchmark crashed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from . import bigdir, config_lag, delivery, hashing, loop_lag, memory, poll, remote, replicas, retention, sftp, stage
from .common import Result, machine_notes, scratch_dir
from .report import DOC, ORDER, write

__all__ = ["BENCHMARKS", "main"]

Benchmark = Callable[[Path, bool], Result]

BENCHMARKS: dict[str, tuple[Benchmark, str]] = {
    "hash": (hashing.run, "sha256 of a 1 GiB file vs sha256sum (goal: >= 0.8x its speed)"),
    "poll": (poll.run, "steady-state poll of 100,000 files vs find -printf (goal: <= 2.5x its time)"),
    "delivery": (delivery.run, "10,000 new files to a gRPC client, SQLite state (goal: <= stable_for + 3 s)"),
    "memory": (memory.run, "RSS with 100,000 tracked files (goal: < 200 MB)"),
    "loop-lag": (loop_lag.run, "event-loop lag while a 1,000,000-file tree is polled (goal: <= 100 ms)"),
    "retention": (retention.run, "a simulated year of 10,000 files a day: state and RSS flat (goal: <= 1.1x)"),
    "remote-list": (remote.run_list, "listing 10,000 files on vsftpd vs lftp find (goal: <= 1.5x its time)"),
    "remote-hash": (remote.run_hash, "download + sha256 of 1 GiB from vsftpd vs curl (goal: >= 0.8x its speed)"),
    "remote-unchanged": (remote.run_unchanged, "unchanged polls of 10,000 files on vsftpd (goal: 0 bytes downloaded)"),
    "sftp-hash": (sftp.run_hash, "download + sha256 of 500 MB from OpenSSH vs rclone cat | openssl (goal: >= 0.9x)"),
    "sftp-list": (sftp.run_list, "steady listing of 10,000 files on OpenSSH vs rclone lsjson -R (goal: <= 1.5x)"),
    "config-lag": (config_lag.run, "event-loop lag under hostile stream configs vs tiny bad ones (goal: <= 5x)"),
    "stage": (stage.run, "hash + stage 1 GiB to S3 (moto) vs boto3 upload_file (goal: <= 1.5x its time)"),
    "delivery-pg": (delivery.run_pg, "10,000 new files to a gRPC client, PostgreSQL state (goal: <= stable_for + 6 s)"),
    "replicas": (replicas.run, "16 sources' bursts on two replicas vs one, PostgreSQL state (goal: <= 0.8x the time)"),
    "remote-bigdir": (
        bigdir.run,
        "one 100,000-file directory on vsftpd: loop held, memory, vs lftp (goal: <= 100 ms)",
    ),
}
assert tuple(BENCHMARKS) == ORDER


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes; results are printed, not recorded")
    parser.add_argument("--write", action="store_true", help="record --quick results in the doc too")
    parser.add_argument("--no-write", action="store_true", help="print only, leave the doc alone")
    parser.add_argument("--tmp", help="directory for the benchmark data (default: the system temp dir)")
    parser.add_argument("--doc", type=Path, default=DOC, help=f"where to write the results (default: {DOC})")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)

    if args.list:
        for name, (_, what) in BENCHMARKS.items():
            print(f"{name:16s} {what}")
        return 0
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)
    # The server under test logs every event; keep the run's output to the results.
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("ftpsource").setLevel(logging.ERROR)

    notes = machine_notes(args.tmp)
    for line in notes:
        print(f"# {line}")
    results: list[Result] = []
    crashed = False
    for name in names:
        fn, what = BENCHMARKS[name]
        print(f"\n== {name}: {what}{' (quick)' if args.quick else ''}", flush=True)
        t0 = time.monotonic()
        try:
            with scratch_dir(args.tmp, name) as scratch:
                result = fn(scratch, args.quick)
        except Exception:
            crashed = True
            traceback.print_exc()
            continue
        results.append(result)
        print(f"   baseline:  {result.baseline}")
        print(f"   ftpsource: {result.measured}")
        for line in result.details:
            print(f"   - {line}")
        if result.error:
            print(f"   ERROR: {result.error}")
        verdict = "pass" if result.passed else "FAIL"
        print(f"   ratio {result.ratio:.2f} (target {result.target}): {verdict}  [{time.monotonic() - t0:.0f} s]")

    if results and not args.no_write and (not args.quick or args.write):
        print(f"\nresults written to {write(results, notes, args.doc)}")
    if crashed:
        return 2
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
