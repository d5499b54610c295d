#!/usr/bin/env python3
"""Reads pageviews' Iceberg tables with Spark through the SQLite (JDBC) catalog, as the
README tells a Spark user to: Iceberg's Spark runtime and the SQLite driver as jars
(`scripts/iceberg-rest spark-jars`), a SparkCatalog of type jdbc over ROOT/catalog.db.

    "$SPARK_PY" tests/readers/spark_iceberg.py ROOT JARS HOUR_START HOUR_END

Prints, sorted, one CSV line per table `table,rows` and per postcode of
page_view_aggregates `agg,postcode,sum(views)`; then, for page_views rows with HOUR_START <=
timestamp < HOUR_END (UTC, 'YYYY-MM-DD HH:MM:SS'), `pruned,FILES`: the data files Iceberg's
scan planned (its scan metrics), `skipped,FILES`: the snapshot's other data files (its `files`
table), and `pruned_rows,N` the rows. Last, unsorted, one line `snapshot,LOG_VERSION,ROWS`
per snapshot of page_views, oldest first: the log version its summary records and the rows
a time-travel read (`VERSION AS OF`) of it returns.
Runs Spark in local mode on one core, in UTC.
"""

import os
import sys

from pyspark.sql import SparkSession

TABLES = ["page_views", "page_view_aggregates", "late_page_views", "dead_letters"]


def scan_metrics(plan):
    """The metrics of the Iceberg scan (BatchScan) in an executed plan."""
    if plan.nodeName().startswith("BatchScan"):
        out, it = {}, plan.metrics().iterator()
        while it.hasNext():
            kv = it.next()
            out[kv._1()] = kv._2().value()
        return out
    children = plan.children().iterator()
    while children.hasNext():
        found = scan_metrics(children.next())
        if found is not None:
            return found
    return None


def main(root, jars, start, end):
    os.environ["TZ"] = "UTC"
    spark = (
        SparkSession.builder.master("local[1]")
        .appName("pageviews-iceberg")
        .config("spark.jars", jars)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.catalog.pageviews", "org.apache.iceberg.spark.SparkCatalog")
        .config("spark.sql.catalog.pageviews.type", "jdbc")
        .config("spark.sql.catalog.pageviews.uri", f"jdbc:sqlite:{root}/catalog.db")
        .config("spark.sql.catalog.pageviews.warehouse", f"file://{root}/_iceberg")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    lines = []
    for table in TABLES:
        n = spark.sql(f"SELECT count(*) AS n FROM pageviews.pageviews.{table}").collect()[0]["n"]
        lines.append(f"{table},{n}")
    for r in spark.sql(
        "SELECT postcode, sum(views) AS v FROM pageviews.pageviews.page_view_aggregates GROUP BY postcode"
    ).collect():
        lines.append(f"agg,{r['postcode']},{r['v']}")
    # What Iceberg planned for a time range, from its scan's metrics: files read and skipped.
    where = f"timestamp >= TIMESTAMP '{start}' AND timestamp < TIMESTAMP '{end}'"
    df = spark.sql(f"SELECT * FROM pageviews.pageviews.page_views WHERE {where}")
    lines.append(f"pruned_rows,{len(df.collect())}")
    metrics = scan_metrics(df._jdf.queryExecution().executedPlan())
    lines.append(f"pruned,{metrics['resultDataFiles']}")
    # A manifest whose partition range misses the filter is skipped whole, and its files are
    # not among skippedDataFiles: the files skipped are the snapshot's others.
    total = spark.sql("SELECT count(*) AS n FROM pageviews.pageviews.page_views.files").collect()[0]["n"]
    lines.append(f"skipped,{total - metrics['resultDataFiles']}")
    # Time travel: each snapshot read as of its id holds the rows of the checkpoint it records.
    travel = []
    for s in spark.sql(
        "SELECT snapshot_id, summary FROM pageviews.pageviews.page_views.snapshots ORDER BY committed_at"
    ).collect():
        rows = spark.sql(
            f"SELECT count(*) AS n FROM pageviews.pageviews.page_views VERSION AS OF {s['snapshot_id']}"
        ).collect()[0]["n"]
        travel.append(f"snapshot,{s['summary']['pageviews.log-version']},{rows}")
    spark.stop()
    for line in sorted(lines) + travel:
        print(line)


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])
