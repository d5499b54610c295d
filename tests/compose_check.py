"""Checks the services of compose.yaml as `docker-compose config` resolves them.

    docker-compose -f compose.yaml config | python3 tests/compose_check.py --root .

Reads the resolved configuration (YAML) on stdin and checks what no schema does: the services
and their profiles, a health check on every long-running service, dependencies that wait for
health (or for a one-off job's exit 0) in the order kafka → datagen → pageviews → prometheus →
grafana, and that the addresses, credentials and ports the services give each other agree.
Prints one line per failed check and exits 1 if any failed. tests/compose.sh runs it.
"""

import argparse
import json
import os
import re
import sys

import yaml

DEFAULT = {"kafka", "datagen", "pageviews", "prometheus-config", "prometheus", "grafana"}
S3 = {"minio", "minio-bucket", "prometheus-s3-target", "pageviews-s3"}
ONE_OFF = {"prometheus-config", "minio-bucket", "prometheus-s3-target"}
PAGEVIEWS_IMAGE = {"datagen", "pageviews", "pageviews-s3"}
# Who must (directly or not) wait for whom: the start order the README promises.
ORDER = [
    ("datagen", "kafka"),
    ("pageviews", "datagen"),
    ("prometheus", "pageviews"),
    ("prometheus", "prometheus-config"),
    ("grafana", "prometheus"),
    ("minio-bucket", "minio"),
    ("pageviews-s3", "minio-bucket"),
    ("pageviews-s3", "datagen"),
    ("prometheus-s3-target", "prometheus-config"),
]
HOST_PORTS = {
    "kafka": {9092},
    "pageviews": {9249},
    "prometheus": {9090},
    "grafana": {3000},
    "minio": {9000, 9001},
    "pageviews-s3": {9250},
}

failures = []
checks = 0


def check(ok, message):
    global checks
    checks += 1
    if not ok:
        failures.append(message)
    return ok


def depends_on(service):
    """{dependency: condition}; the short list form means `service_started`."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def published_ports(service):
    ports = set()
    for p in service.get("ports") or []:
        if isinstance(p, dict):
            ports.add(int(p["published"]))
        else:  # "HOST:CONTAINER" strings, in older outputs
            ports.add(int(str(p).split(":")[-2]))
    return ports


def volumes(service):
    """[(source, target)]; sources as written or made absolute by the config command."""
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            out.append((str(v.get("source")), v["target"]))
        else:
            parts = v.split(":")
            out.append((parts[0], parts[1]))
    return out


def mounts(service, root, rel_source, target):
    want = os.path.normpath(os.path.join(root, rel_source))
    return any(os.path.normpath(os.path.join(root, s)) == want and t == target for s, t in volumes(service))


def env(service):
    e = service.get("environment") or {}
    if isinstance(e, list):
        e = dict(item.split("=", 1) for item in e)
    return {k: ("" if v is None else str(v)) for k, v in e.items()}


def closure(services, name, seen=None):
    """Everything `name` waits for, directly or through others."""
    seen = set() if seen is None else seen
    for dep in depends_on(services[name]):
        if dep not in seen and dep in services:
            seen.add(dep)
            closure(services, dep, seen)
    return seen


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="the repository root (where compose.yaml is)")
    args = parser.parse_args()
    root = os.path.abspath(args.root)
    services = yaml.safe_load(sys.stdin)["services"]
    names = set(services)

    # The services and their profiles: the s3 ones only under --profile s3.
    check(names == DEFAULT | S3, f"services are {sorted(names)}, expected {sorted(DEFAULT | S3)}")
    for name in names & DEFAULT:
        check(not services[name].get("profiles"), f"{name} must run without a profile")
    for name in names & S3:
        check(services[name].get("profiles") == ["s3"], f"{name} must be in profile s3 only")

    for name in sorted(names):
        s = services[name]
        deps = depends_on(s)
        if name in ONE_OFF:
            check(s.get("restart") in ("no", None), f"one-off job {name} must not restart")
            waited = [n for n in names if depends_on(services[n]).get(name) == "service_completed_successfully"]
            check(waited, f"nobody waits for one-off job {name} to complete")
        else:
            hc = s.get("healthcheck") or {}
            check(hc.get("test") and not hc.get("disable"), f"{name} has no health check")
        for dep, condition in deps.items():
            if not check(dep in names, f"{name} depends on unknown service {dep}"):
                continue
            expected = "service_completed_successfully" if dep in ONE_OFF else "service_healthy"
            check(condition == expected, f"{name} waits for {dep} with {condition}, expected {expected}")
            if name in DEFAULT:
                check(dep in DEFAULT, f"{name} (no profile) depends on {dep}, which runs only with its profile")

    for later, earlier in ORDER:
        if later in names and earlier in names:
            check(earlier in closure(services, later), f"{later} must wait for {earlier}")
    for name in names:
        check(name not in closure(services, name), f"{name} depends on itself (a cycle)")

    # Ports: the documented ones, none published twice.
    seen = {}
    for name in sorted(names):
        ports = published_ports(services[name])
        if name in HOST_PORTS:
            check(ports == HOST_PORTS[name], f"{name} publishes {sorted(ports)}, expected {sorted(HOST_PORTS[name])}")
        for p in ports:
            check(p not in seen, f"host port {p} published by {seen.get(p)} and {name}")
            seen[p] = name

    # The pipeline image: built here, one name for every service that runs it.
    for name in PAGEVIEWS_IMAGE & names:
        s = services[name]
        check(s.get("image") == "pageviews:latest", f"{name} must run image pageviews:latest")
        build = s.get("build") or {}
        context = build.get("context") if isinstance(build, dict) else build
        check(context and os.path.normpath(os.path.join(root, context)) == root, f"{name} must build from the repository root")
    dockerfile = open(os.path.join(root, "Dockerfile")).read()
    runtime = dockerfile.split(" AS runtime", 1)[-1]
    for name in PAGEVIEWS_IMAGE & names:
        test = " ".join(services[name]["healthcheck"]["test"])
        if "curl" in test:
            check(re.search(r"apt-get install[^\n]*\bcurl\b", runtime), f"{name}'s health check runs curl, which the runtime image lacks")
    check(re.search(r"^USER (?!root\b|0\b)\S+", runtime, re.M), "the runtime image must run as a non-root user")
    check('ENTRYPOINT ["pageviews"]' in runtime and 'CMD ["run"]' in runtime, "the image runs `pageviews run` by default")
    check(re.search(r"^RUN scripts/build\b", dockerfile, re.M), "the Dockerfile must build with scripts/build")

    # Kafka: clients inside use the advertised internal listener; datagen's health check
    # watches a connection to that very port.
    advertised = env(services["kafka"]).get("KAFKA_ADVERTISED_LISTENERS", "")
    internal = {a.split("://", 1)[1] for a in advertised.split(",") if "://" in a}
    for name in PAGEVIEWS_IMAGE & names:
        bootstrap = env(services[name]).get("KAFKA_BOOTSTRAP")
        check(bootstrap in internal, f"{name}: KAFKA_BOOTSTRAP={bootstrap} is not a listener kafka advertises ({advertised})")
    port = int(env(services["datagen"])["KAFKA_BOOTSTRAP"].rsplit(":", 1)[1])
    check(f":{port:04X} 01 " in " ".join(services["datagen"]["healthcheck"]["test"]),
          f"datagen's health check must look for a connection to port {port} (hex {port:04X})")
    check("localhost:9092" in advertised, "kafka must advertise localhost:9092 for clients on the host")

    # The pipelines: HTTP on every interface (the published port reaches it), tables in ./data.
    for name in ("pageviews", "pageviews-s3"):
        if name in names:
            cmd = services[name].get("command") or []
            check(cmd[:1] == ["run"] and "0.0.0.0:9249" in cmd, f"{name} must run `run --http 0.0.0.0:9249`")
    check(mounts(services["pageviews"], root, "data", "/data"), "pageviews must mount ./data at /data")

    # Prometheus: its folder comes from deploy/prometheus plus our targets, in the volume it reads.
    check(mounts(services["prometheus-config"], root, "deploy/prometheus", "/src/prometheus"), "prometheus-config must read deploy/prometheus")
    config_volume = [s for s, t in volumes(services["prometheus"]) if t == "/etc/prometheus"]
    check(config_volume and any(s == config_volume[0] and t == "/config" for s, t in volumes(services["prometheus-config"])),
          "prometheus must read the folder prometheus-config writes")
    targets_dir = os.path.join(root, "deploy/compose/prometheus-targets")
    for file, name in (("pageviews.json", "pageviews"), ("s3/pageviews-s3.json", "pageviews-s3")):
        groups = json.load(open(os.path.join(targets_dir, file)))
        check([t for g in groups for t in g["targets"]] == [f"{name}:9249"], f"{file} must list {name}:9249")
    check(mounts(services["grafana"], root, "deploy/grafana/provisioning", "/etc/grafana/provisioning"), "grafana must mount deploy/grafana/provisioning")
    check(mounts(services["grafana"], root, "deploy/grafana/dashboards", "/var/lib/grafana/dashboards"), "grafana must mount deploy/grafana/dashboards")
    gf = env(services["grafana"])
    check(gf.get("GF_SECURITY_ADMIN_USER") == "admin" and gf.get("GF_SECURITY_ADMIN_PASSWORD") == "admin", "grafana's login is admin/admin")

    # S3: the pipeline writes to the bucket the job creates, with MinIO's own credentials.
    if S3 <= names:
        s3env, minio = env(services["pageviews-s3"]), env(services["minio"])
        check(s3env.get("AWS_ENDPOINT_URL") == "http://minio:9000", "pageviews-s3 must use AWS_ENDPOINT_URL=http://minio:9000")
        check(s3env.get("AWS_ALLOW_HTTP") == "true", "pageviews-s3 needs AWS_ALLOW_HTTP=true for plain http")
        check(s3env.get("AWS_ACCESS_KEY_ID") == minio.get("MINIO_ROOT_USER")
              and s3env.get("AWS_SECRET_ACCESS_KEY") == minio.get("MINIO_ROOT_PASSWORD"), "pageviews-s3's keys must be MinIO's")
        check(s3env.get("CONSUMER_GROUP", "pageviews") != "pageviews", "pageviews-s3 needs its own consumer group")
        cmd = services["pageviews-s3"]["command"]
        output = cmd[cmd.index("--output") + 1] if "--output" in cmd else ""
        bucket = services["minio-bucket"]["command"][-1].split("/", 1)[1]
        check(output.startswith(f"s3://{bucket}/"), f"pageviews-s3 writes {output}, not into the bucket {bucket}")

    for f in failures:
        print(f"compose_check: {f}", file=sys.stderr)
    print(f"compose_check: {checks} checks, {len(failures)} failed", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
