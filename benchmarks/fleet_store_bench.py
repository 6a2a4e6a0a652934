"""How fast the fleet stores write: records (and rows) per second for batches of 100 and 500.

Each record is one frame's detections message (3 boxes and a classifier result: 1 ``messages`` row
and 4 ``detections`` rows) from one of 20 devices, made by the runtime's payload builders
(``tests/support/fleet.py``); every batch is new, as a consumer's are. SQLite writes a fresh file
(WAL, synchronous=FULL: one fsync per batch); PostgreSQL 15 runs on loopback from the tests'
harness (``tests/support/postgres.py``, fsync=off unless ``--fsync``, or ``--postgres URL`` names a
server of yours), once per batch-insert method (``unnest`` arrays, and a pipelined ``executemany``).

    .venv/bin/python benchmarks/fleet_store_bench.py                 # ~1 minute
    .venv/bin/python benchmarks/fleet_store_bench.py --records 2000  # smoke run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support import fleet  # noqa: E402

from edge_sdk.fleet.postgres import PostgresStore  # noqa: E402
from edge_sdk.fleet.sqlite import SQLiteStore  # noqa: E402


def batches(total: int, size: int) -> list[list]:
    records = [fleet.detections(f"dev-{i % 20:02d}", i // 20 + 1) for i in range(total)]
    return [records[i:i + size] for i in range(0, total, size)]


def measure(store, work: list[list]) -> tuple[float, int]:
    rows_before = store.count("messages") + store.count("detections")
    start = time.perf_counter()
    for batch in work:
        store.write(batch)
    seconds = time.perf_counter() - start
    return seconds, store.count("messages") + store.count("detections") - rows_before


def report(name: str, size: int, records: int, seconds: float, rows: int) -> None:
    print(f"| {name} | {size} | {records} | {records / seconds:,.0f} | {rows / seconds:,.0f} | {1000 * seconds * size / records:.1f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--fsync", action="store_true", help="the harness server flushes every commit (as production does)")
    parser.add_argument("--postgres", help="a PostgreSQL URL to use instead of a harness server (its tables are written to)")
    args = parser.parse_args(argv)
    print("| store | batch | records | records/s | rows/s | ms/batch |\n|---|---|---|---|---|---|")
    for size in (100, 500):
        work = batches(args.records, size)
        with tempfile.TemporaryDirectory() as folder, SQLiteStore(Path(folder) / "fleet.db") as store:
            report("SQLite", size, args.records, *measure(store, work))
        for method in ("unnest", "executemany"):
            if args.postgres:
                run_postgres(args.postgres, method, size, args.records, work)
                continue
            from support.postgres import Postgres

            with Postgres(fsync=args.fsync) as server:
                run_postgres(server.new_database(), method, size, args.records, work)


def run_postgres(url: str, method: str, size: int, total: int, work: list[list]) -> None:
    with PostgresStore(url) as store:
        store.batch_insert = method
        report(f"PostgreSQL ({method})", size, total, *measure(store, work))


if __name__ == "__main__":
    main()
