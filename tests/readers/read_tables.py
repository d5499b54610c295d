#!/usr/bin/env python3
"""Reads pageviews' Parquet tables the way downstream users do, and checks them against
the JSON-lines tables written from the same input.

    PY=$(scripts/python-env)
    "$PY" tests/readers/read_tables.py ROOT_JSONL ROOT_PARQUET

Both roots hold `<table>/day=YYYY-MM-DD/hour=HH/part-….{jsonl,parquet}` (plus `_SUCCESS`
markers) and, beside the tables, `_checkpoints/` and `_staging/`, which no reader may see.
For each table, the Parquet side is read twice, with no options beyond the path:

    duckdb   SELECT * FROM read_parquet('ROOT/table/**/*.parquet')   (hive partitions found)
    pyarrow  pyarrow.parquet.read_table('ROOT/table')                (hive partitions found,
                                                                      `_SUCCESS` ignored)

and each result must equal the JSON-lines rows (day and hour taken from the path) as a
multiset, once values are put in one form: timestamps as 'yyyy-MM-dd HH:mm:ss.SSS' UTC,
day as 'YYYY-MM-DD', hour as 'HH' (the readers infer dates, ints or dictionaries for them).
dead_letters' received_at (and so its day and hour) is processing time, which two runs never
share: those are left out of its comparison. The Parquet column types are checked too, in
each file (user_id and views int64, timestamps ms and UTC, strings strings), and what DuckDB
makes of them.

Prints `<reader> <table> <rows> rows match` per table and reader and exits 0; on a mismatch
prints what differs and exits 1; exits 2 when it cannot run.
"""

import json
import os
import sys
from collections import Counter
from datetime import date, datetime, timezone

try:
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError as e:
    print(f"read_tables.py: {e}; run it with the python of scripts/python-env", file=sys.stderr)
    sys.exit(2)

# The columns each table's files hold (JSON-lines field names == Parquet column names), and
# the kind of each: a Parquet type check and a normalisation rule.
#   int64: must be int64 · int: any integer width · str: a string · ts: timestamp(ms, UTC)
TABLES = {
    "page_views": {
        "user_id": "int64",
        "postcode": "str",
        "timestamp": "ts",
        "webpage": "str",
    },
    "page_view_aggregates": {
        "postcode": "str",
        "window_start": "ts",
        "window": "ts",
        "views": "int64",
    },
    "late_page_views": {
        "user_id": "int64",
        "postcode": "str",
        "timestamp": "ts",
        "webpage": "str",
        "watermark": "ts",
    },
    "dead_letters": {
        "payload": "str",
        "payload_encoding": "str",
        "reason": "str",
        "error": "str",
        "source": "str",
        "partition": "int",
        "offset": "int",
        "received_at": "ts",
    },
}

# dead_letters are partitioned by the time a record was received: processing time, which
# two runs over the same input never share. Those columns are checked for type, not value.
NOT_COMPARED = {"dead_letters": ("received_at", "day", "hour")}

PARTITION_COLUMNS = ("day", "hour")
UTC_NAMES = ("UTC", "+00:00", "Etc/UTC")
SHOW = 5  # differing rows shown per side


class Mismatch(Exception):
    """A table that does not read back as it should; the message says how."""


# ---- normal form -------------------------------------------------------------------------


def timestamp_text(value):
    """A reader's datetime as the JSON-lines writer spells it: 'yyyy-MM-dd HH:mm:ss.SSS' UTC."""
    if value.tzinfo is None:
        # Reported by the type check; kept comparable here so the diff stays readable.
        value = value.replace(tzinfo=timezone.utc)
    v = value.astimezone(timezone.utc)
    text = f"{v.year:04d}-{v.month:02d}-{v.day:02d} {v.hour:02d}:{v.minute:02d}:{v.second:02d}"
    # Sub-millisecond digits cannot come from a ms column: keep them, so they show as a diff.
    frac = f"{v.microsecond // 1000:03d}" if v.microsecond % 1000 == 0 else f"{v.microsecond:06d}"
    return f"{text}.{frac}"


def normal_day(value):
    return value.isoformat() if isinstance(value, date) else str(value)


def normal_hour(value):
    # '00' from a path, 0 from a reader that inferred an int.
    return f"{value:02d}" if isinstance(value, int) else str(value)


def normal_timestamp(value):
    # JSON lines hold the text already; readers give datetimes.
    return timestamp_text(value) if isinstance(value, datetime) else value


def compared_columns(table):
    """The columns whose values must agree, in the order rows are compared in."""
    skip = NOT_COMPARED.get(table, ())
    return [c for c in sorted(TABLES[table]) + list(PARTITION_COLUMNS) if c not in skip]


def normal_rows(table, rows):
    """Rows (dicts) as a multiset of tuples of compared_columns() values, in one form."""
    columns = compared_columns(table)
    kinds = dict(TABLES[table], day="day", hour="hour")
    rule = {"day": normal_day, "hour": normal_hour, "ts": normal_timestamp}
    rules = [(c, rule.get(kinds[c])) for c in columns]
    return Counter(
        tuple(row[c] if f is None or row[c] is None else f(row[c]) for c, f in rules) for row in rows
    )


def check_columns(reader, table, names):
    """A reader sees the table's columns plus the hive partition columns, no more, no less."""
    expected = set(TABLES[table]) | set(PARTITION_COLUMNS)
    if set(names) != expected:
        missing = sorted(expected - set(names))
        extra = sorted(set(names) - expected)
        raise Mismatch(f"{reader} columns {list(names)}: missing {missing}, unexpected {extra}")


# ---- readers -----------------------------------------------------------------------------


def partition_of(path, table_dir):
    """day and hour from `<table_dir>/day=…/hour=…/file`."""
    parts = dict(
        p.split("=", 1) for p in os.path.relpath(os.path.dirname(path), table_dir).split(os.sep) if "=" in p
    )
    if set(parts) != set(PARTITION_COLUMNS):
        raise Mismatch(f"{path}: not under day=…/hour=… (found partitions {sorted(parts)})")
    return parts


def data_files(table_dir, extension):
    """Data files of a table: hidden (`.`) and marker (`_`) files are not data."""
    found = []
    for folder, dirs, files in os.walk(table_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        found += [
            os.path.join(folder, f)
            for f in sorted(files)
            if f.endswith(extension) and not f.startswith((".", "_"))
        ]
    return found


def stray_files(table_dir, extension):
    """What a table folder holds besides day=…/hour=…/ folders of data files and `_SUCCESS`
    markers (DESIGN §3): readers disagree on such files (pyarrow skips `_x.parquet`, a DuckDB
    glob reads it), so none may be there."""
    stray = []
    for folder, dirs, files in os.walk(table_dir):
        depth = len(os.path.relpath(folder, table_dir).split(os.sep)) if folder != table_dir else 0
        key = PARTITION_COLUMNS[depth] + "=" if depth < len(PARTITION_COLUMNS) else None
        stray += [os.path.join(folder, d) + "/" for d in dirs if key is None or not d.startswith(key)]
        dirs[:] = [d for d in dirs if key is not None and d.startswith(key)]
        for f in files:
            data = depth == len(PARTITION_COLUMNS) and f.endswith(extension) and not f.startswith((".", "_"))
            if not data and f != "_SUCCESS":
                stray.append(os.path.join(folder, f))
    return sorted(os.path.relpath(p, table_dir) for p in stray)


def read_jsonl(table, table_dir):
    columns = set(TABLES[table])
    rows = []
    for path in data_files(table_dir, ".jsonl"):
        partition = partition_of(path, table_dir)
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise Mismatch(f"{path}:{number}: not JSON ({e})") from None
                if set(row) != columns:
                    raise Mismatch(
                        f"{path}:{number}: fields {sorted(row)}, expected {sorted(columns)}"
                    )
                row.update(partition)
                rows.append(row)
    return rows


def read_duckdb(table, table_dir):
    glob = os.path.join(table_dir, "**", "*.parquet").replace("'", "''")
    con = duckdb.connect()
    try:
        cursor = con.execute(f"SELECT * FROM read_parquet('{glob}')")
        names = [d[0] for d in cursor.description]
        types = {d[0]: str(d[1]) for d in cursor.description}
        rows = [dict(zip(names, values)) for values in cursor.fetchall()]
    finally:
        con.close()
    check_columns("DuckDB", table, names)
    expected = {"int64": ("BIGINT",), "int": ("TINYINT", "SMALLINT", "INTEGER", "BIGINT"),
                "str": ("VARCHAR",), "ts": ("TIMESTAMP WITH TIME ZONE",)}
    wrong = [
        f"{c}: {types.get(c)} (expected {' or '.join(expected[kind])})"
        for c, kind in TABLES[table].items()
        if types.get(c, "").upper() not in expected[kind]
    ]
    if wrong:
        raise Mismatch("DuckDB column types: " + "; ".join(wrong))
    return rows


def read_pyarrow(table, table_dir):
    data = pq.read_table(table_dir)
    check_columns("pyarrow", table, data.column_names)
    return data.to_pylist()


def arrow_type_problem(kind, t):
    """Why Arrow type t is not what a column of this kind must be, or None."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if kind == "int64":
        return None if t == pa.int64() else "expected int64"
    if kind == "int":
        return None if pa.types.is_integer(t) else "expected an integer"
    if kind == "str":
        ok = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
        return None if ok else "expected a string"
    if kind == "ts":
        if not pa.types.is_timestamp(t):
            return "expected timestamp(ms, UTC)"
        if t.unit != "ms":
            return f"unit {t.unit}, expected ms"
        if t.tz not in UTC_NAMES:
            return f"time zone {t.tz!r}, expected UTC"
        return None
    raise ValueError(kind)


def check_parquet_schema(table, table_dir):
    """Every file's own schema, as pyarrow reads it, and the Parquet timestamp logical type."""
    expected = TABLES[table]
    problems = []
    for path in data_files(table_dir, ".parquet"):
        name = os.path.relpath(path, table_dir)
        try:
            file = pq.ParquetFile(path)
            schema = file.schema_arrow
        except Exception as e:  # not Parquet at all
            problems.append(f"{name}: unreadable: {type(e).__name__}: {e}")
            continue
        if set(schema.names) != set(expected):
            problems.append(f"{name}: columns {schema.names}, expected {list(expected)}")
            continue
        for column, kind in expected.items():
            problem = arrow_type_problem(kind, schema.field(column).type)
            if problem:
                problems.append(f"{name}: {column} is {schema.field(column).type}: {problem}")
            elif kind == "ts":
                index = file.schema.names.index(column)
                logical = json.loads(file.schema.column(index).logical_type.to_json())
                if not logical.get("isAdjustedToUTC"):
                    problems.append(f"{name}: {column} is not isAdjustedToUTC in Parquet ({logical})")
        if len(problems) > 20:
            break
    if problems:
        raise Mismatch("Parquet column types:\n    " + "\n    ".join(problems[:20]))


# ---- comparison --------------------------------------------------------------------------


def describe_difference(table, reference, rows):
    """What differs between two multisets of normal rows: counts, columns, example rows."""
    columns = compared_columns(table)
    only_ref = reference - rows
    only_rows = rows - reference
    lines = [
        f"jsonl {sum(reference.values())} rows, parquet {sum(rows.values())} rows; "
        f"{sum(only_ref.values())} only in jsonl, {sum(only_rows.values())} only in parquet"
    ]
    # With as many rows on each side, which columns disagree as a whole points straight at
    # a type or format problem (with different counts it mostly lists the missing rows).
    for i, column in enumerate(columns if sum(only_ref.values()) == sum(only_rows.values()) else []):
        a, b = Counter(), Counter()
        for values, side in ((a, reference), (b, rows)):
            for row, n in side.items():
                values[row[i]] += n
        if a != b:
            lines.append(
                f"column {column} differs: only jsonl has {list(a - b)[:3]!r}, "
                f"only parquet has {list(b - a)[:3]!r}"
            )
    for label, diff in (("only in jsonl", only_ref), ("only in parquet", only_rows)):
        for row in sorted(diff, key=repr)[:SHOW]:
            lines.append(f"{label}: {dict(zip(columns, row))}")
    return "\n  ".join(lines)


def check_table(table, jsonl_root, parquet_root):
    """Prints one line per reader; returns True when everything matches."""
    jsonl_dir = os.path.join(jsonl_root, table)
    parquet_dir = os.path.join(parquet_root, table)
    in_jsonl, in_parquet = os.path.isdir(jsonl_dir), os.path.isdir(parquet_dir)
    if not in_jsonl and not in_parquet:
        print(f"{table}: under neither root, nothing to compare")
        return True
    if in_jsonl != in_parquet:
        where, missing = (jsonl_root, parquet_root) if in_jsonl else (parquet_root, jsonl_root)
        print(f"FAIL {table}: present under {where} but not under {missing}")
        return False

    ok = True
    for directory, extension in ((jsonl_dir, ".jsonl"), (parquet_dir, ".parquet")):
        stray = stray_files(directory, extension)
        if stray:
            print(f"FAIL {table}: {directory} holds more than data files and _SUCCESS markers: {stray[:10]}")
            ok = False

    try:
        reference = normal_rows(table, read_jsonl(table, jsonl_dir))
    except Mismatch as e:
        print(f"FAIL jsonl {table}: {e}")
        return False
    if NOT_COMPARED.get(table):
        print(f"{table}: {', '.join(NOT_COMPARED[table])} are processing time, checked for type only")

    if not data_files(parquet_dir, ".parquet"):
        # Readers refuse an empty glob; an empty table is still a match for an empty one.
        empty = not reference
        for reader in ("duckdb", "pyarrow"):
            if empty:
                print(f"{reader} {table} 0 rows match (no Parquet files)")
            else:
                print(f"FAIL {reader} {table}: no Parquet files, jsonl has {sum(reference.values())} rows")
        return ok and empty

    try:
        check_parquet_schema(table, parquet_dir)
    except Mismatch as e:
        print(f"FAIL parquet {table}: {e}")
        ok = False
    for reader, read in (("duckdb", read_duckdb), ("pyarrow", read_pyarrow)):
        try:
            rows = normal_rows(table, read(table, parquet_dir))
        except Mismatch as e:
            print(f"FAIL {reader} {table}: {e}")
            ok = False
            continue
        except Exception as e:  # a reader that cannot read the files at all
            print(f"FAIL {reader} {table}: {reader} could not read {parquet_dir}: {type(e).__name__}: {e}")
            ok = False
            continue
        if rows == reference:
            print(f"{reader} {table} {sum(rows.values())} rows match")
        else:
            print(f"FAIL {reader} {table}: rows differ\n  {describe_difference(table, reference, rows)}")
            ok = False
    return ok


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    jsonl_root, parquet_root = argv[1], argv[2]
    for root in (jsonl_root, parquet_root):
        if not os.path.isdir(root):
            print(f"read_tables.py: {root} is not a folder", file=sys.stderr)
            return 2
    results = [check_table(table, jsonl_root, parquet_root) for table in TABLES]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
