"""The full-stack deliverables (compose.yaml, .env.example, grafana/provisioning,
prometheus/prometheus.yml), checked without a Docker engine: structure, memory budget, Kafka
KRaft and TimescaleDB tuning, start-up order, that every ``WORKBENCH_*`` variable is a real
setting and every workbench service's environment is accepted by Settings, that Prometheus
scrapes where the processors serve their metrics, and that no secret is committed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import sys
import zipfile
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml

from workbench.config import PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DATASOURCE = ROOT / "grafana" / "provisioning" / "datasources" / "workbench.yaml"
PROMETHEUS = ROOT / "prometheus" / "prometheus.yml"

INFRASTRUCTURE = {"kafka", "timescaledb", "grafana", "prometheus", "minio"}
#: The services that run the workbench itself: one image, one environment (the anchor).
WORKBENCH_SERVICES = {"processor", "simulator", "jupyter", "workbench", "reports", "gateway"}
#: One-shot jobs: they exit, so they are waited for with service_completed_successfully.
ONE_SHOT = {"minio-init", "workbench"}
SERVICES = INFRASTRUCTURE | WORKBENCH_SERVICES | {"minio-init"}
#: What a plain `docker compose up` starts (the rest is behind profiles).
DEFAULT_UP = INFRASTRUCTURE | {"minio-init", "processor", "simulator", "jupyter", "gateway"}
#: Services that nothing waits on and that have no endpoint to probe.
NO_HEALTH_CHECK = {"minio-init", "processor", "simulator", "workbench", "reports"}
GIB = 1024**3
MIB = 1024**2

# One interpolation token of the Compose spec: "$$" (a literal "$"), "${NAME...}" or "$NAME".
_TOKEN = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def mem_bytes(value: str | int) -> int:
    """A Compose byte value ("512m", "1g", "1.5GB", 268435456) in bytes.

    >>> mem_bytes("512m"), mem_bytes("1g"), mem_bytes("2GB"), mem_bytes(1024)
    (536870912, 1073741824, 2147483648, 1024)
    """
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([bkmg]?)b?", str(value).strip().lower())
    if not match:
        raise ValueError(f"not a Compose byte value: {value!r}")
    return int(float(match[1]) * _UNITS[match[2]])


def strings(node: Any) -> Iterator[str]:
    """Every string value (not key) in a parsed YAML document: what Compose interpolates."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def references(text: str) -> list[tuple[str, str]]:
    """The ``(NAME, modifier)`` of each variable reference, ``$$`` escapes skipped."""
    found = []
    for escape, braced, modifier, bare in _TOKEN.findall(text):
        if not escape:
            found.append((braced or bare, modifier))
    return found


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose interpolation of one value, enough for ``:-``, ``-``, ``:?`` and ``?``."""

    def replace(match: re.Match[str]) -> str:
        escape, braced, modifier, bare = match.groups()
        if escape:
            return "$"
        name = braced or bare
        value = env.get(name)
        if modifier.startswith((":-", ":?")):
            unset = not value
            operator, argument = modifier[:2], modifier[2:]
        elif modifier.startswith(("-", "?")):
            unset = value is None
            operator, argument = modifier[:1], modifier[1:]
        else:
            unset, operator, argument = False, "", ""
        if unset and operator.endswith("-"):
            return argument
        if unset and operator.endswith("?"):
            raise KeyError(f"{name} is required: {argument}")
        return value or ""

    return _TOKEN.sub(replace, text)


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, from either Compose form (mapping or list)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with COMPOSE.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: not NAME=value: {line!r}"
            values[name.strip()] = value.strip()
    return values


def test_compose_file_has_its_services_and_no_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose, "the Compose spec has no top-level version: key"
    assert set(compose["services"]) == SERVICES


def test_every_service_has_an_image_a_memory_limit_and_a_health_check(
    services: dict[str, Any],
) -> None:
    for name, service in services.items():
        assert isinstance(service.get("image"), str), name
        assert ":" in service["image"], f"{name}: pin the image tag"
        assert not service["image"].endswith(":latest"), f"{name}: pin the image tag"
        assert mem_bytes(service["mem_limit"]) > 0, name
        if name not in NO_HEALTH_CHECK:
            test = service["healthcheck"]["test"]
            assert test and test[0] in {"CMD", "CMD-SHELL"}, name


def test_default_up_and_profiles(services: dict[str, Any]) -> None:
    assert {name for name, s in services.items() if not s.get("profiles")} == DEFAULT_UP
    assert services["workbench"]["profiles"] == ["run"]
    assert services["reports"]["profiles"] == ["reports"]


def test_memory_limits_add_up_to_less_than_8_gib(services: dict[str, Any]) -> None:
    limits = {name: mem_bytes(service["mem_limit"]) for name, service in services.items()}
    # every service of every profile at once, one processor (docs/operations.md's arithmetic)
    total = sum(limits.values())
    assert total < 8 * GIB, f"{total / GIB:.2f} GiB"
    assert total == 8160 * MIB, "docs/operations.md states 8160 MiB: update it with compose.yaml"
    # the default `up` with `docker compose up --scale processor=3`
    scaled = sum(limits[name] for name in DEFAULT_UP) + 2 * limits["processor"]
    assert scaled < 8 * GIB, f"--scale processor=3: {scaled / GIB:.2f} GiB"


def test_kafka_is_a_single_kraft_node(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    env = environment(kafka)
    assert kafka["image"] == "apache/kafka:3.9.0"
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    node_id = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node_id}@kafka:9093"

    listeners = dict(item.split("://", 1) for item in env["KAFKA_LISTENERS"].split(","))
    assert listeners["PLAINTEXT"] == ":9092"
    assert listeners["CONTROLLER"] == ":9093"
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert "PLAINTEXT://kafka:9092" in advertised
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] == "PLAINTEXT"
    protocols = dict(
        item.split(":", 1) for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(listeners) <= set(protocols), "every listener needs a security protocol"
    assert {a.split("://", 1)[0] for a in advertised} <= set(listeners) - {"CONTROLLER"}

    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"]), "a base64 UUID"
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    assert env["KAFKA_NUM_PARTITIONS"] == str(Settings().partitions)

    # the broker's heap fits inside the container with room for the JVM's other memory
    heap = re.search(r"-Xmx(\d+[kmg])", env["KAFKA_HEAP_OPTS"], re.IGNORECASE)
    assert heap, "KAFKA_HEAP_OPTS must set -Xmx"
    assert mem_bytes(heap[1]) <= mem_bytes(kafka["mem_limit"]) * 3 // 4
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in " ".join(kafka["healthcheck"]["test"])
    assert "--bootstrap-server localhost:9092" in " ".join(kafka["healthcheck"]["test"])

    # the log lives on the named volume, not in the image's default /tmp directory
    mounts = dict(volume.split(":")[:2] for volume in kafka["volumes"])
    assert mounts.get("kafka-data") == env["KAFKA_LOG_DIRS"]


def test_timescaledb_is_healthy_only_when_it_answers_and_is_local_only(
    services: dict[str, Any],
) -> None:
    db = services["timescaledb"]
    assert db["image"].startswith("timescale/timescaledb:")
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert "127.0.0.1:5432:5432" in db["ports"]
    assert any(v.endswith(":/var/lib/postgresql/data") for v in db["volumes"])


def test_timescaledb_tuning_is_pinned_to_the_memory_limit(services: dict[str, Any]) -> None:
    # the image's init script runs timescaledb-tune --memory=$TS_TUNE_MEMORY --cpus=...
    db = services["timescaledb"]
    env = environment(db)
    assert mem_bytes(env["TS_TUNE_MEMORY"]) == mem_bytes(db["mem_limit"])
    assert int(env["TS_TUNE_NUM_CPUS"]) >= 1


def test_published_ports_are_bound_to_loopback(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is open to the network"


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: bind mount {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"


def test_workbench_variables_are_real_settings(services: dict[str, Any]) -> None:
    known = {PREFIX + field.name.upper() for field in dataclasses.fields(Settings)}
    for name, service in services.items():
        for variable in environment(service):
            if variable.startswith(PREFIX):
                assert variable in known, f"{name}: {variable} is not a workbench setting"


@pytest.mark.parametrize("name", sorted(WORKBENCH_SERVICES))
def test_workbench_environment_is_accepted_by_settings(
    services: dict[str, Any], env_example: dict[str, str], name: str
) -> None:
    from workbench.archive.fs import S3_OPTIONS

    env = {
        key: interpolate(value, env_example) for key, value in environment(services[name]).items()
    }
    settings = Settings.from_env({k: v for k, v in env.items() if k.startswith(PREFIX)})
    assert settings.bootstrap_servers == "kafka:9092"
    assert settings.database_url == (
        f"postgresql://{env_example['POSTGRES_USER']}:{env_example['POSTGRES_PASSWORD']}"
        f"@timescaledb:5432/{env_example['POSTGRES_DB']}"
    )
    assert not settings.embedded_broker and not settings.embedded_database
    assert settings.reader_password == env_example["WORKBENCH_READER_PASSWORD"]

    # the archive: MinIO's bucket, endpoint options the archive code knows, keys from AWS_*
    uri = urlsplit(settings.archive_uri or "")
    assert (uri.scheme, uri.netloc, uri.path) == ("s3", env_example["ARCHIVE_BUCKET"], "/archive")
    options = dict(parse_qsl(uri.query))
    assert set(options) <= set(S3_OPTIONS)
    assert options["endpoint_override"] == "minio:9000" and options["scheme"] == "http"
    assert "secret_key" not in options and "access_key" not in options
    assert env["AWS_ACCESS_KEY_ID"] == env_example["MINIO_ROOT_USER"]
    assert env["AWS_SECRET_ACCESS_KEY"] == env_example["MINIO_ROOT_PASSWORD"]


def test_workbench_services_share_one_environment(services: dict[str, Any]) -> None:
    """The same settings everywhere (one YAML anchor); only service-specific extras differ."""
    extras = {"REPORT_EVERY_S", "SIMULATOR_ARGS", "JUPYTER_TOKEN", "WORKBENCH_WORKERS",
              "WORKBENCH_METRICS_PORT", "WORKBENCH_METRICS_HOST",
              "WORKBENCH_GATEWAY_API_KEYS"}  # fmt: skip
    envs = {
        name: {k: v for k, v in environment(services[name]).items() if k not in extras}
        for name in WORKBENCH_SERVICES
    }
    reference = envs["processor"]
    for name, env in envs.items():
        assert env == reference, f"{name}: not the shared workbench environment"
        assert services[name]["image"] == services["processor"]["image"], name
        assert ".:/workbench:ro" in services[name]["volumes"], name


@pytest.mark.parametrize("name", sorted(WORKBENCH_SERVICES))
def test_workbench_services_start_after_the_infrastructure_and_the_bucket(
    services: dict[str, Any], name: str
) -> None:
    depends_on = services[name]["depends_on"]
    assert depends_on == {
        "kafka": {"condition": "service_healthy"},
        "timescaledb": {"condition": "service_healthy"},
        "minio-init": {"condition": "service_completed_successfully"},
    }


def _argv(script: str, call: str) -> list[str]:
    """The argv of the ``call ...`` command in a shell script, $$ escapes undone."""
    found = re.search(rf"(?<![/\w]){call} [^|;&]*", script.replace("$$", "$"))
    assert found, script
    return shlex.split(found[0])


def test_processor_is_scalable(services: dict[str, Any]) -> None:
    from workbench.cli import build_parser

    processor = services["processor"]
    assert "container_name" not in processor, "a fixed name prevents --scale"
    assert not processor.get("ports"), "a fixed host port prevents --scale"
    assert not processor.get("profiles")
    script = processor["command"][2]
    assert "pip install -e /workbench" in script
    args = build_parser().parse_args(_argv(script, "workbench")[1:])
    assert args.command == "process"
    assert args.idle_timeout is None and args.max_messages is None, "runs until stopped"
    # more processors than partitions would sit idle in the consumer group
    kafka_partitions = int(environment(services["kafka"])["KAFKA_NUM_PARTITIONS"])
    assert kafka_partitions == Settings().partitions >= 3


@pytest.fixture(scope="module")
def prometheus_config() -> dict[str, Any]:
    with PROMETHEUS.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_prometheus_scrapes_every_processor_where_it_serves_its_metrics(
    services: dict[str, Any], prometheus_config: dict[str, Any]
) -> None:
    processor_env = Settings.from_env(
        {k: v for k, v in environment(services["processor"]).items()
         if k in ("WORKBENCH_METRICS_PORT", "WORKBENCH_METRICS_HOST")}
    )  # fmt: skip
    assert processor_env.metrics_port > 0, "the processor serves no metrics"
    assert processor_env.metrics_host == "0.0.0.0", "another container must reach it"
    jobs = {job["job_name"]: job for job in prometheus_config["scrape_configs"]}
    # every replica (--scale): DNS service discovery on the service name, at its metrics port
    (sd,) = jobs["processor"]["dns_sd_configs"]
    assert sd["names"] == ["processor"] and sd["type"] == "A"
    assert sd["port"] == processor_env.metrics_port
    # the gateway's /metrics, a target whether or not the gateway runs yet
    assert jobs["gateway"]["static_configs"] == [{"targets": ["gateway:8000"]}]
    assert jobs["gateway"].get("metrics_path", "/metrics") == "/metrics"
    scrape = prometheus_config["global"]["scrape_interval"]
    assert scrape == "5s", "the dashboard refreshes every 5 s"


def test_prometheus_runs_with_its_config_in_a_bounded_memory(
    services: dict[str, Any],
) -> None:
    prometheus = services["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus:v")
    flags = dict(arg.split("=", 1) for arg in prometheus["command"])
    mounts = dict(
        v.rsplit(":", 1)[0].split(":", 1) for v in prometheus["volumes"] if v.endswith(":ro")
    )
    assert mounts["./prometheus/prometheus.yml"] == flags["--config.file"]
    assert f"prometheus-data:{flags['--storage.tsdb.path']}" in prometheus["volumes"]
    assert "--storage.tsdb.retention.size" in flags and "--storage.tsdb.retention.time" in flags
    # the Go heap's soft limit well inside the container's
    limit = mem_bytes(environment(prometheus)["GOMEMLIMIT"].replace("MiB", "m"))
    assert limit <= mem_bytes(prometheus["mem_limit"]) * 7 // 8
    assert "127.0.0.1:9090:9090" in prometheus["ports"]
    assert "/-/healthy" in " ".join(prometheus["healthcheck"]["test"])


def test_simulator_produces_a_realtime_factory_in_a_loop(
    services: dict[str, Any], env_example: dict[str, str]
) -> None:
    from workbench.cli import build_parser

    simulator = services["simulator"]
    script = simulator["command"][2]
    assert re.search(r"while :; do .*workbench simulate .*; done", script)
    argv = _argv(script, "workbench simulate")
    # the shell expands $SIMULATOR_ARGS (from .env) and the seed
    expanded = []
    for arg in argv:
        if arg == "${SIMULATOR_ARGS}":
            expanded += shlex.split(env_example["SIMULATOR_ARGS"])
        elif arg == "$(date +%s)":
            expanded.append("1764000000")
        else:
            expanded.append(arg)
    args = build_parser().parse_args(expanded[1:])
    assert (args.command, args.realtime, args.scenario) == ("simulate", True, "standard")
    default = environment(simulator)["SIMULATOR_ARGS"]
    assert interpolate(default, {}) == env_example["SIMULATOR_ARGS"], "the same default"


def test_jupyter_serves_the_notebooks_on_loopback_with_a_token(services: dict[str, Any]) -> None:
    jupyter = services["jupyter"]
    assert jupyter["ports"] == ["127.0.0.1:8888:8888"]
    assert re.fullmatch(r"\$\{JUPYTER_TOKEN:\?[^}]*\}", environment(jupyter)["JUPYTER_TOKEN"])
    assert "./notebooks:/workbench/notebooks" in jupyter["volumes"]
    script = jupyter["command"][2]
    assert "jupyter lab" in script and "--ip=0.0.0.0" in script
    assert "8888" in " ".join(jupyter["healthcheck"]["test"])


def test_minio_holds_the_archive_and_its_bucket_is_made_first(
    services: dict[str, Any], env_example: dict[str, str]
) -> None:
    minio = services["minio"]
    assert minio["image"].startswith("minio/minio:RELEASE.")
    assert minio["command"][:2] == ["server", "/data"]
    assert "minio-data:/data" in minio["volumes"]
    env = environment(minio)
    assert env["MINIO_ROOT_USER"].startswith("${MINIO_ROOT_USER")
    assert env["MINIO_ROOT_PASSWORD"].startswith("${MINIO_ROOT_PASSWORD")
    assert len(env_example["MINIO_ROOT_PASSWORD"]) >= 8, "MinIO wants 8 characters at least"

    init = services["minio-init"]
    assert init["image"].startswith("minio/mc:RELEASE.")
    assert init["depends_on"] == {"minio": {"condition": "service_healthy"}}
    assert init.get("restart", "no") == "no" and not init.get("profiles")
    script = init["entrypoint"][2]
    assert "mc alias set local http://minio:9000" in script
    assert 'mc mb --ignore-existing "local/$${ARCHIVE_BUCKET}"' in script
    assert (
        interpolate(environment(init)["ARCHIVE_BUCKET"], env_example)
        == (env_example["ARCHIVE_BUCKET"])
    )
    # every service that may archive (has an archive URI) waits for the bucket
    for name, service in services.items():
        if "WORKBENCH_ARCHIVE_URI" in environment(service):
            condition = service["depends_on"]["minio-init"]["condition"]
            assert condition == "service_completed_successfully", name


def test_workbench_job_runs_a_real_command_after_healthy_infrastructure(
    services: dict[str, Any],
) -> None:
    from workbench.cli import build_parser

    workbench = services["workbench"]
    assert workbench["profiles"] == ["run"]

    command = workbench["command"]
    assert command[:2] == ["sh", "-c"]
    argv = shlex.split(command[2].split("&&")[-1])
    argv = argv[1:] if argv[0] == "exec" else argv
    assert argv[0] == "workbench"
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.machines, args.duration) == ("run", 20, 60.0)
    assert "pip install -e /workbench" in command[2]
    assert any(v.split(":")[1] == "/workbench" for v in workbench["volumes"])


def test_reports_service_runs_every_notebook_on_a_schedule_into_the_host_folder(
    services: dict[str, Any],
) -> None:
    from workbench.cli import build_parser

    reports = services["reports"]
    assert reports["profiles"] == ["reports"]
    assert environment(reports) | {"REPORT_EVERY_S": ""} == environment(services["workbench"]) | {
        "REPORT_EVERY_S": ""
    }, "the same settings as the workbench job"
    script = reports["command"][2]
    call = re.search(r"workbench report [^|;&]*", script)
    assert call, script
    args = build_parser().parse_args(shlex.split(call[0])[1:])
    assert (args.command, args.all, args.out) == ("report", True, "/reports")
    assert re.search(r"while :; do .* sleep .*REPORT_EVERY_S.*; done", script)
    assert "./reports:/reports" in reports["volumes"]


def test_grafana_waits_for_the_database_and_mounts_provisioning(
    services: dict[str, Any],
) -> None:
    grafana = services["grafana"]
    assert grafana["depends_on"]["timescaledb"]["condition"] == "service_healthy"
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    assert "127.0.0.1:3000:3000" in grafana["ports"]
    env = environment(grafana)
    assert re.fullmatch(
        r"\$\{WORKBENCH_READER_PASSWORD:\?[^}]*\}", env["WORKBENCH_READER_PASSWORD"]
    )
    assert "POSTGRES_PASSWORD" not in env, "Grafana reads with the read-only role only"


def test_every_dependency_is_waited_for_with_the_right_condition(
    services: dict[str, Any],
) -> None:
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{name}: depends_on without conditions"
        for dependency, spec in depends_on.items():
            condition = spec.get("condition")
            if dependency in ONE_SHOT:
                assert condition == "service_completed_successfully", f"{name} -> {dependency}"
            elif "healthcheck" in services[dependency]:
                assert condition == "service_healthy", f"{name} -> {dependency}"
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits on {dependency}"
            # a profile-less service may not wait on one that `up` does not start
            if not service.get("profiles"):
                assert not services[dependency].get("profiles"), f"{name} -> {dependency}"


def test_no_password_is_committed(compose: dict[str, Any], env_example: dict[str, str]) -> None:
    secret = re.compile(r"PASSWORD|SECRET|TOKEN", re.IGNORECASE)
    for name, service in compose["services"].items():
        for key, value in environment(service).items():
            if secret.search(key):
                assert re.fullmatch(r"\$\{[A-Za-z_]\w*[^}]*\}", value), f"{name}: {key} is literal"
            # a password inside a URL (scheme://user:password@host) must be a reference too
            masked = _TOKEN.sub(lambda m: "$" if m[1] else "<ref>", value)
            for password in re.findall(r"://[^/@:]*:([^/@]*)@", masked):
                assert password == "<ref>", f"{name}: {key} has a literal password"
    # a secret may not hide in a default value either: ${X_PASSWORD:-hunter2}
    for text in strings(compose):
        for variable, modifier in references(text):
            if secret.search(variable):
                assert not modifier.startswith((":-", "-")), f"{variable} has a default"
    for variable, value in env_example.items():
        if secret.search(variable):
            assert value == "change-me", f".env.example: {variable} should be change-me"


def test_every_variable_compose_needs_is_in_env_example(
    compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    needed = {variable for text in strings(compose) for variable, _ in references(text)}
    assert needed, "compose.yaml should take its credentials from .env"
    assert needed <= set(env_example), f"missing from .env.example: {needed - set(env_example)}"
    # and every value in it interpolates (no required variable left unset)
    for text in strings(compose):
        interpolate(text, env_example)


def test_interpolation_helpers() -> None:
    env = {"A": "x", "EMPTY": ""}
    assert references("$${NOT} ${A:-d} $A ${B:?msg}") == [("A", ":-d"), ("A", ""), ("B", ":?msg")]
    assert interpolate("$${A} ${A} ${EMPTY:-d} ${EMPTY-d} ${B-}", env) == "${A} x d  "
    with pytest.raises(KeyError, match="B is required"):
        interpolate("${B:?set B}", env)


def test_grafana_datasource_is_the_workbench_database(
    services: dict[str, Any],
) -> None:
    with DATASOURCE.open(encoding="utf-8") as f:
        provisioning = yaml.safe_load(f)
    assert provisioning["apiVersion"] == 1
    sources = provisioning["datasources"]
    postgres = [s for s in sources if s["type"] == "grafana-postgresql-datasource"]
    assert len(postgres) == 1
    source = postgres[0]
    assert source["name"] == "Workbench"
    assert source["uid"] == "workbench-pg"
    assert source["url"] == "timescaledb:5432"
    assert source["jsonData"]["sslmode"] == "disable"
    assert source["jsonData"]["timescaledb"] is True
    assert source["jsonData"]["postgresVersion"] == 1600

    # the read-only role the workbench creates (workbench.sinks.postgres.READER_ROLE)
    assert source["user"] == "workbench_reader"
    assert "password" not in source, "the password belongs in secureJsonData"
    assert source["secureJsonData"]["password"] == "$WORKBENCH_READER_PASSWORD"

    # Grafana expands $VAR / ${VAR} from its own environment: every one must be set there
    grafana_env = environment(services["grafana"])
    used = {variable for text in strings(source) for variable, _ in references(text)}
    assert "WORKBENCH_READER_PASSWORD" in used
    assert used <= set(grafana_env), f"not in grafana's environment: {used - set(grafana_env)}"


def test_grafana_reads_the_compose_prometheus(services: dict[str, Any]) -> None:
    with DATASOURCE.open(encoding="utf-8") as f:
        sources = yaml.safe_load(f)["datasources"]
    (prometheus,) = [s for s in sources if s["type"] == "prometheus"]
    assert prometheus["uid"] == "workbench-prom" and not prometheus.get("isDefault")
    host_port = urlsplit(prometheus["url"]).netloc
    assert host_port == "prometheus:9090"
    assert any(p.endswith(":9090") for p in services["prometheus"]["ports"])
    assert [s["isDefault"] for s in sources if s.get("isDefault")] == [True], "one default"


# The Compose specification's JSON schema as shipped inside a PyPI package: docker-compose
# 1.29 vendors the 2021 spec. It cannot be a dev dependency (it pins PyYAML < 6), so
# scripts/setup.sh downloads its wheel, without installing it, into SCHEMA_WHEELS, and the
# schema is read from inside the wheel. An installed docker-compose works as well.
_SCHEMA_SOURCES = [("docker-compose", "compose/config/compose_spec.json")]
SCHEMA_WHEELS = Path(sys.prefix) / "share" / "workbench-dev"


def _compose_schema() -> dict[str, Any] | None:
    for distribution, member in _SCHEMA_SOURCES:
        for wheel in sorted(SCHEMA_WHEELS.glob(f"{distribution.replace('-', '_')}-*.whl")):
            with zipfile.ZipFile(wheel) as zf:
                return json.loads(zf.read(member))
        try:
            path = Path(str(metadata.distribution(distribution).locate_file(member)))
        except metadata.PackageNotFoundError:
            continue
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    return None


def test_compose_file_matches_the_compose_specification_schema(compose: dict[str, Any]) -> None:
    schema = _compose_schema()
    if schema is None:
        message = (
            f"no Compose specification schema: run scripts/setup.sh (it downloads the "
            f"docker-compose wheel into {SCHEMA_WHEELS})"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # imported only now: importing jsonschema takes about 2 s here (its format checkers)
    jsonschema = pytest.importorskip("jsonschema")
    # the vendored copy declares draft 2019-09 under a URL jsonschema does not know
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_gateway_serves_on_loopback_with_keys_and_is_scraped(services: dict[str, Any]) -> None:
    gateway = services["gateway"]
    argv = _argv(gateway["command"][-1], "python")
    assert argv[:3] == ["python", "-m", "workbench.gateway"]
    port = argv[argv.index("--port") + 1]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert f"127.0.0.1:{port}:{port}" in gateway["ports"]
    assert "${GATEWAY_API_KEYS:?" in environment(gateway)["WORKBENCH_GATEWAY_API_KEYS"]
    assert f"127.0.0.1:{port}/readyz" in " ".join(gateway["healthcheck"]["test"])
    jobs = {
        job["job_name"]: job for job in yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]
    }
    assert jobs["gateway"]["static_configs"][0]["targets"] == [f"gateway:{port}"]
