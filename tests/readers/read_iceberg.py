"""Reads pageviews' Iceberg tables with pyiceberg, a reader nobody here wrote, and prints
what a test compares with the commit log, as one JSON object:

    {"<table>": {"rows": N, "files": N, "snapshots": [{"id", "version", "rows"}...],
                 "pruned_files": N (files planned for the newest hour only)},
     "views": total views in page_view_aggregates}

usage: read_iceberg.py CATALOG_PROPERTIES_JSON NAMESPACE
"""

import json
import sys

from pyiceberg.catalog import load_catalog
from pyiceberg.expressions import GreaterThanOrEqual

TIME_COLUMN = {
    "page_views": "timestamp",
    "late_page_views": "timestamp",
    "page_view_aggregates": "window",
    "dead_letters": "received_at",
}


def summary_of(snapshot):
    summary = snapshot.summary
    extra = getattr(summary, "additional_properties", None)
    if extra is None:
        extra = dict(summary)
    return extra


def main():
    props = json.loads(sys.argv[1])
    namespace = sys.argv[2]
    catalog = load_catalog("pageviews", **props)
    out = {}
    for name, column in TIME_COLUMN.items():
        table = catalog.load_table(f"{namespace}.{name}")
        arrow = table.scan().to_arrow()
        entry = {"rows": arrow.num_rows, "files": len(list(table.scan().plan_files())), "snapshots": []}
        for snapshot in table.snapshots():
            rows = table.scan(snapshot_id=snapshot.snapshot_id).to_arrow().num_rows
            version = summary_of(snapshot).get("pageviews.log-version")
            entry["snapshots"].append({"id": snapshot.snapshot_id, "version": int(version or 0), "rows": rows})
        if arrow.num_rows:
            newest = arrow.column(column).to_pylist()
            newest = max(newest)
            hour = newest.replace(minute=0, second=0, microsecond=0)
            # Hidden partitioning: a filter on the time column plans only that hour's files.
            pruned = table.scan(row_filter=GreaterThanOrEqual(column, hour.isoformat()))
            entry["pruned_files"] = len(list(pruned.plan_files()))
            entry["pruned_rows"] = pruned.to_arrow().num_rows
            entry["type"] = str(arrow.schema.field(column).type)
        if name == "page_view_aggregates":
            out["views"] = sum(arrow.column("views").to_pylist())
        out[name] = entry
    print(json.dumps(out))


if __name__ == "__main__":
    main()
