#!/usr/bin/env python3
"""Reads pageviews' ORC tables with pyarrow's ORC reader (Apache ORC's C++ library), and
checks them against the JSON-lines tables written from the same input.

    PY=$(scripts/python-env)
    "$PY" tests/readers/read_orc.py ROOT_JSONL ROOT_ORC

For each table the ORC side is read with no options beyond the path and the format:

    pyarrow.dataset.dataset('ROOT/table', format='orc', partitioning='hive')

and must equal the JSON-lines rows as a multiset, in the normal form of read_tables.py
(timestamps as 'yyyy-MM-dd HH:mm:ss.SSS' UTC, day 'YYYY-MM-DD', hour 'HH'); dead_letters'
processing times are left out as there. Every file's own schema is checked too, as
pyarrow.orc.ORCFile reads it: user_id and views int64, strings strings, timestamps
timestamps without a zone (ORC TIMESTAMP, written in UTC), Snappy.

Prints `pyarrow-orc <table> <rows> rows match` per table and exits 0; on a mismatch prints
what differs and exits 1; exits 2 when it cannot run.
"""

import os
import sys

try:
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.orc as orc
except ImportError as e:
    print(f"read_orc.py: {e}; run it with the python of scripts/python-env", file=sys.stderr)
    sys.exit(2)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import read_tables as rt  # noqa: E402  (the normal form and the JSON-lines side)


def type_problem(kind, t):
    """Why Arrow type t, as pyarrow reads an ORC column, is not what the column must be."""
    if kind == "ts":
        # ORC TIMESTAMP has no zone in the type; the writer's zone (UTC) is in each stripe.
        if not pa.types.is_timestamp(t):
            return "expected a timestamp"
        return None if t.tz in (None,) + rt.UTC_NAMES else f"time zone {t.tz!r}"
    return rt.arrow_type_problem(kind, t)


def check_orc_schema(table, table_dir):
    problems = []
    for path in rt.data_files(table_dir, ".orc"):
        name = os.path.relpath(path, table_dir)
        try:
            file = orc.ORCFile(path)
            schema, compression = file.schema, file.compression
        except Exception as e:  # not ORC at all
            problems.append(f"{name}: unreadable: {type(e).__name__}: {e}")
            continue
        if schema.names != list(rt.TABLES[table]):
            problems.append(f"{name}: columns {schema.names}, expected {list(rt.TABLES[table])}")
            continue
        for column, kind in rt.TABLES[table].items():
            problem = type_problem(kind, schema.field(column).type)
            if problem:
                problems.append(f"{name}: {column} is {schema.field(column).type}: {problem}")
        if compression != "SNAPPY":
            problems.append(f"{name}: compression {compression}, expected SNAPPY")
        if len(problems) > 20:
            break
    if problems:
        raise rt.Mismatch("ORC column types:\n    " + "\n    ".join(problems[:20]))


def read_pyarrow_orc(table, table_dir):
    data = ds.dataset(table_dir, format="orc", partitioning="hive").to_table()
    rt.check_columns("pyarrow-orc", table, data.column_names)
    return data.to_pylist()


def check_table(table, jsonl_root, orc_root):
    jsonl_dir, orc_dir = os.path.join(jsonl_root, table), os.path.join(orc_root, table)
    if not os.path.isdir(jsonl_dir) and not os.path.isdir(orc_dir):
        print(f"{table}: under neither root, nothing to compare")
        return True
    try:
        stray = rt.stray_files(orc_dir, ".orc") if os.path.isdir(orc_dir) else []
        if stray:
            raise rt.Mismatch(f"{orc_dir} holds more than data files and _SUCCESS markers: {stray[:10]}")
        reference = rt.normal_rows(table, rt.read_jsonl(table, jsonl_dir)) if os.path.isdir(jsonl_dir) else {}
        if not (os.path.isdir(orc_dir) and rt.data_files(orc_dir, ".orc")):
            if reference:
                raise rt.Mismatch(f"no ORC files, jsonl has {sum(reference.values())} rows")
            print(f"pyarrow-orc {table} 0 rows match (no ORC files)")
            return True
        check_orc_schema(table, orc_dir)
        rows = rt.normal_rows(table, read_pyarrow_orc(table, orc_dir))
    except rt.Mismatch as e:
        print(f"FAIL pyarrow-orc {table}: {e}")
        return False
    except Exception as e:  # a reader that cannot read the files at all
        print(f"FAIL pyarrow-orc {table}: could not read {orc_dir}: {type(e).__name__}: {e}")
        return False
    if rows != reference:
        diff = rt.describe_difference(table, reference, rows).replace("parquet", "orc")
        print(f"FAIL pyarrow-orc {table}: rows differ\n  {diff}")
        return False
    print(f"pyarrow-orc {table} {sum(rows.values())} rows match")
    return True


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    for root in argv[1:]:
        if not os.path.isdir(root):
            print(f"read_orc.py: {root} is not a folder", file=sys.stderr)
            return 2
    results = [check_table(table, argv[1], argv[2]) for table in rt.TABLES]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
