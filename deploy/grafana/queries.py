#!/usr/bin/env python3
"""Every PromQL query of our Grafana dashboards, ready to run against Prometheus.

Grafana cannot run on our machines, so the dashboards are proven the other way round: each
panel query (and each template variable's query) is extracted with Grafana's variables
substituted, then run through Prometheus's HTTP API, which must answer with data.

    deploy/grafana/queries.py                       list every query (TSV: dashboard, panel, ref, expr)
    deploy/grafana/queries.py --json                the same as JSON, for tests
    deploy/grafana/queries.py --prometheus URL      run each as an instant query; exit 1 unless all
                                                    return data
    deploy/grafana/queries.py --prometheus URL --exclude pageviews_ --wait 60
                                                    skip queries naming pageviews_ metrics, and
                                                    retry empty ones for up to 60 s (rates need a
                                                    few scrapes) instead of failing at once
    deploy/grafana/queries.py --lint                check the dashboards and provisioning agree
                                                    (datasource uid, no ${DS_…} inputs, every
                                                    target has an expr); exit 1 naming each fault
    deploy/grafana/queries.py --rules               every query as a recording rule, so that
                                                    `promtool check rules` parses them offline

Dashboards default to every *.json beside this script in dashboards/; name files to pick.
Template variables become `.+` (Grafana's "All" as a regex; the panels match them with
=~), or the regex given with --var NAME=REGEX. Grafana's built-ins become fixed windows:
$__rate_interval (--rate-interval, default 1m), $__interval (--interval, default 15s) and
$__range (--range, default 1h). A `$name` left over is an error, not a silent pass.

Variable queries use Grafana's label_values(); they are run as `count by (label) (…)`,
which returns data exactly when the variable's dropdown would have values.

Only the standard library: it runs on a fresh machine with python3 alone.
"""

import argparse
import glob
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
# The datasource every panel names; provisioning/datasources/prometheus.yaml fixes its uid.
DATASOURCE = {"type": "prometheus", "uid": "pageviews-prometheus"}
DURATION = re.compile(r"^\d+(ms|s|m|h|d)$")


def duration_seconds(text):
    """'1m' -> 60.0 (the units Grafana's built-ins use)."""
    number, unit = re.match(r"^(\d+)(ms|s|m|h|d)$", text).groups()
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def builtins(args):
    range_s = duration_seconds(args.range)
    interval_s = duration_seconds(args.interval)
    return {
        "__rate_interval": args.rate_interval,
        "__interval": args.interval,
        "__interval_ms": str(int(interval_s * 1000)),
        "__range": args.range,
        "__range_s": str(int(range_s)),
        "__range_ms": str(int(range_s * 1000)),
    }


def substitute(expr, values):
    """Replaces $name, ${name}, ${name:format} and [[name]] the way Grafana does for a
    regex-formatted value; names not in `values` are left for the caller to report."""

    def value(match):
        name = match.group("a") or match.group("b") or match.group("c")
        return values.get(name, match.group(0))

    pattern = r"\$\{(?P<a>\w+)(?::[^}]*)?\}|\[\[(?P<b>\w+)\]\]|\$(?P<c>[A-Za-z_]\w*)"
    return re.sub(pattern, value, expr)


def variable_query(definition):
    """label_values(metric{…}, label) -> count by (label) (metric{…})."""
    m = re.match(r"^\s*label_values\((?P<sel>.+),\s*(?P<label>\w+)\s*\)\s*$", definition, re.S)
    if m:
        return f"count by ({m.group('label')}) ({m.group('sel').strip()})"
    m = re.match(r"^\s*query_result\((?P<q>.+)\)\s*$", definition, re.S)
    if m:
        return m.group("q")
    raise ValueError(f"unsupported variable query {definition!r} (label_values(metric, label) or query_result(q))")


def panels_of(dashboard):
    """Every panel, including those inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def extract(paths, args):
    """Returns a list of dicts: dashboard, panel, ref, expr, kind."""
    fixed = builtins(args)
    given = dict(v.split("=", 1) for v in args.var)
    out = []
    for path in paths:
        with open(path) as f:
            dashboard = json.load(f)
        name = os.path.basename(path)
        variables = [v for v in dashboard.get("templating", {}).get("list", [])]
        values = {v["name"]: given.get(v["name"], ".+") for v in variables}
        values.update(fixed)
        unknown = set(given) - set(values)
        if unknown:
            sys.exit(f"queries.py: {name} has no variable {', '.join(sorted(unknown))}")
        found = []
        for v in variables:
            if v.get("type") != "query":
                continue
            query = v.get("query")
            definition = query.get("query") if isinstance(query, dict) else query
            found.append((f"${v['name']} (variable)", "var", variable_query(definition), "variable"))
        for panel in panels_of(dashboard):
            for target in panel.get("targets", []):
                found.append((panel.get("title", ""), target.get("refId", ""), target.get("expr", ""), "panel"))
        for title, ref, expr, kind in found:
            query = substitute(expr, values)
            left = re.findall(r"\$\{?[A-Za-z_]\w*|\[\[\w+\]\]", query)
            if left:
                sys.exit(f"queries.py: {name} / {title} [{ref}]: unknown variable(s) {', '.join(left)} in {expr!r}")
            out.append({"dashboard": name, "panel": title, "ref": ref, "expr": query, "kind": kind})
    return out


def lint(paths):
    """Returns a list of faults: what file provisioning of these dashboards would break on."""
    faults = []
    with open(os.path.join(HERE, "provisioning", "datasources", "prometheus.yaml")) as f:
        if not re.search(r"^\s*uid:\s*%s\s*$" % re.escape(DATASOURCE["uid"]), f.read(), re.M):
            faults.append(f"provisioning/datasources/prometheus.yaml: no datasource with uid {DATASOURCE['uid']}")
    with open(os.path.join(HERE, "provisioning", "dashboards", "dashboards.yaml")) as f:
        if not re.search(r"^\s*path:\s*/var/lib/grafana/dashboards\s*$", f.read(), re.M):
            faults.append("provisioning/dashboards/dashboards.yaml: the file provider does not read /var/lib/grafana/dashboards")
    uids = {}
    for path in paths:
        name = os.path.basename(path)
        with open(path) as f:
            text = f.read()
        try:
            dashboard = json.loads(text)
        except ValueError as e:
            faults.append(f"{name}: not JSON: {e}")
            continue
        # Inputs are for the import dialog; a provisioned dashboard keeps the literal text.
        if "${DS_" in text or "__inputs" in dashboard:
            faults.append(f"{name}: has ${{DS_…}} datasource inputs or __inputs; name the datasource uid instead")
        if not dashboard.get("uid"):
            faults.append(f"{name}: no fixed uid (links and provisioning updates need one)")
        elif dashboard["uid"] in uids:
            faults.append(f"{name}: uid {dashboard['uid']} is also used by {uids[dashboard['uid']]}")
        uids[dashboard.get("uid")] = name
        if dashboard.get("id") is not None:
            faults.append(f"{name}: id must be null (Grafana assigns it)")
        if not isinstance(dashboard.get("schemaVersion"), int) or dashboard["schemaVersion"] < 36:
            faults.append(f"{name}: schemaVersion {dashboard.get('schemaVersion')!r}, expected 36 or later")
        for v in dashboard.get("templating", {}).get("list", []):
            if v.get("type") == "query" and v.get("datasource") != DATASOURCE:
                faults.append(f"{name}: variable ${v.get('name')} does not use datasource {DATASOURCE}")
        ids = set()
        for panel in panels_of(dashboard):
            title = panel.get("title") or f"panel {panel.get('id')}"
            if panel.get("id") in ids:
                faults.append(f"{name} / {title}: panel id {panel.get('id')} is used twice")
            ids.add(panel.get("id"))
            # Rows group panels and query nothing.
            if panel.get("type") == "row":
                if panel.get("targets"):
                    faults.append(f"{name} / {title}: a row with queries")
                continue
            if panel.get("datasource") != DATASOURCE:
                faults.append(f"{name} / {title}: datasource is {panel.get('datasource')!r}, expected {DATASOURCE}")
            if not panel.get("targets"):
                faults.append(f"{name} / {title}: no queries")
            for target in panel.get("targets", []):
                ref = target.get("refId", "?")
                if target.get("datasource") != DATASOURCE:
                    faults.append(f"{name} / {title} [{ref}]: datasource is {target.get('datasource')!r}, expected {DATASOURCE}")
                if not str(target.get("expr", "")).strip():
                    faults.append(f"{name} / {title} [{ref}]: empty expr")
    return faults


def as_rules(queries):
    """A Prometheus rule file (JSON is YAML) with each query as a recording rule."""
    rules = [{"record": f"dashboard_query:{re.sub(r'[^A-Za-z0-9_]', '_', q['dashboard'])}:{i}", "expr": q["expr"]}
             for i, q in enumerate(queries)]
    return {"groups": [{"name": "dashboard queries", "rules": rules}]}


def run(base_url, expr):
    """Instant query. Returns (number of results, error or None)."""
    url = base_url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            body = json.load(response)
    except urllib.error.HTTPError as e:
        try:
            body = json.load(e)
        except ValueError:
            return 0, f"HTTP {e.code}"
    except OSError as e:
        return 0, f"cannot reach {base_url}: {e}"
    if body.get("status") != "success":
        return 0, f"{body.get('errorType')}: {body.get('error')}"
    data = body["data"]
    if data["resultType"] in ("vector", "matrix"):
        return len(data["result"]), None
    return 1, None  # a scalar or string always has a value


def check(queries, args):
    exclude = re.compile(args.exclude) if args.exclude else None
    todo = [q for q in queries if not (exclude and exclude.search(q["expr"]))]
    skipped = [q for q in queries if q not in todo]
    deadline = time.monotonic() + args.wait
    while True:
        results = [(q, *run(args.prometheus, q["expr"])) for q in todo]
        # A query error will not heal by waiting; empty results may, as scrapes arrive.
        waiting = [r for r in results if r[1] == 0 and r[2] is None]
        errors = [r for r in results if r[2] is not None]
        if errors or not waiting or time.monotonic() >= deadline:
            break
        time.sleep(1)
    for q, count, error in results:
        status = "ERROR " + error if error else ("EMPTY" if count == 0 else f"ok {count:4d}")
        print(f"{status:10s} {q['dashboard']} / {q['panel']} [{q['ref']}]")
        if error or count == 0:
            print(f"           {' '.join(q['expr'].split())}")
    for q in skipped:
        print(f"{'skip':10s} {q['dashboard']} / {q['panel']} [{q['ref']}]")
    bad = [r for r in results if r[2] is not None or r[1] == 0]
    print(f"{len(results) - len(bad)} passed, {len(bad)} failed, {len(skipped)} skipped")
    return 1 if bad else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dashboards", nargs="*", help="dashboard JSON files (default: dashboards/*.json)")
    parser.add_argument("--var", action="append", default=[], metavar="NAME=REGEX", help="a template variable's value")
    parser.add_argument("--rate-interval", default="1m", help="value of $__rate_interval (default 1m)")
    parser.add_argument("--interval", default="15s", help="value of $__interval (default 15s)")
    parser.add_argument("--range", default="1h", help="value of $__range (default 1h)")
    parser.add_argument("--json", action="store_true", help="print the queries as JSON")
    parser.add_argument("--lint", action="store_true", help="check dashboards and provisioning, exit 1 on a fault")
    parser.add_argument("--rules", action="store_true", help="print the queries as a Prometheus rule file")
    parser.add_argument("--prometheus", metavar="URL", help="run every query against this Prometheus")
    parser.add_argument("--exclude", metavar="REGEX", help="with --prometheus: skip queries whose expr matches")
    parser.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                        help="with --prometheus: retry empty results until this many seconds have passed")
    args = parser.parse_args()
    for name in ("rate_interval", "interval", "range"):
        if not DURATION.match(getattr(args, name)):
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)!r} is not a duration like 1m")
    for v in args.var:
        if "=" not in v:
            parser.error(f"--var {v!r} is not NAME=REGEX")

    paths = args.dashboards or sorted(glob.glob(os.path.join(HERE, "dashboards", "*.json")))
    if not paths:
        sys.exit("queries.py: no dashboards found")
    if args.lint:
        faults = lint(paths)
        for fault in faults:
            print(f"queries.py --lint: {fault}", file=sys.stderr)
        sys.exit(1 if faults else 0)
    queries = extract(paths, args)
    if args.rules:
        json.dump(as_rules(queries), sys.stdout, indent=2)
        print()
    elif args.prometheus:
        sys.exit(check(queries, args))
    elif args.json:
        json.dump(queries, sys.stdout, indent=2)
        print()
    else:
        for q in queries:
            print("\t".join([q["dashboard"], q["panel"], q["ref"], " ".join(q["expr"].split())]))


if __name__ == "__main__":
    main()
