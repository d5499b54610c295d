#!/usr/bin/env python3
"""Reads pageviews' ORC tables with Spark, the way a Spark job finds a Hive-partitioned
folder: `spark.read.orc(ROOT/table)`, with partition discovery turning `day=…/hour=…` into
columns and nothing else given. Prints, per table, its row count, its rows per (day, hour),
and its smallest and largest event time, as CSV lines `table,day,hour,rows,min,max` (day and
hour empty for the whole table), sorted, for comparing with `pageviews sql`.

    "$SPARK_PY" tests/readers/spark_orc.py ROOT

Runs Spark in local mode on one core, in UTC: the session's zone, and the JVM's. Spark reads
an ORC TIMESTAMP as a wall-clock time in the JVM's default zone (java.sql.Timestamp), not as
the UTC instant the file's writer zone says, so a JVM in another zone shifts every time by
its offset; Spark jobs reading these tables run their JVMs in UTC (`-Duser.timezone=UTC`).
"""

import os
import sys

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

TIME_COLUMN = {
    "page_views": "timestamp",
    "late_page_views": "timestamp",
    "page_view_aggregates": "window",
    "dead_letters": "received_at",
}


def main(root):
    # Inherited by the JVM that pyspark starts: its default zone (see the docstring).
    os.environ["TZ"] = "UTC"
    spark = (
        SparkSession.builder.master("local[1]")
        .appName("pageviews-orc")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    lines = []
    for table, time in TIME_COLUMN.items():
        folder = os.path.join(root, table)
        if not os.path.isdir(folder):
            continue
        df = spark.read.orc(folder)
        fmt = lambda c: F.date_format(F.col(c), "yyyy-MM-dd HH:mm:ss.SSS")  # noqa: E731
        total = df.agg(F.count("*").alias("n"), F.min(time).alias("lo"), F.max(time).alias("hi"))
        for r in total.select("n", fmt("lo").alias("lo"), fmt("hi").alias("hi")).collect():
            lines.append(f"{table},,,{r['n']},{r['lo']},{r['hi']}")
        # Partition discovery infers types: a day as a date, an hour as an integer.
        parts = df.groupBy(
            F.date_format(F.col("day").cast("date"), "yyyy-MM-dd").alias("d"),
            F.lpad(F.col("hour").cast("string"), 2, "0").alias("h"),
        ).agg(F.count("*").alias("n"), F.min(time).alias("lo"), F.max(time).alias("hi"))
        for r in parts.select("d", "h", "n", fmt("lo").alias("lo"), fmt("hi").alias("hi")).collect():
            lines.append(f"{table},{r['d']},{r['h']},{r['n']},{r['lo']},{r['hi']}")
        print(f"spark schema of {table}: {df.schema.simpleString()}", file=sys.stderr)
    spark.stop()
    for line in sorted(lines):
        print(line)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
