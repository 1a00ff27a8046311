"""Shared fixtures: one real embedded stack (Tansu broker + PostgreSQL) for the session.

Tests never mock Kafka or the database. Each test gets its own topics and consumer
group on the shared stack, so tests do not see each other's messages; tests that need
their own servers (start, kill, stop) start a private stack in a temporary folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# The suite compares the kernels with numba's JIT, the plain-Python path and their
# references; the ahead-of-time build is proven equal to the JIT in test_kernel_aot.py.
os.environ.setdefault("WORKBENCH_AOT", "0")

from workbench import job, kafka
from workbench.config import PREFIX, Settings
from workbench.stack import Endpoints, Stack

WORKBENCH = str(Path(sys.executable).parent / "workbench")


#: Fixtures that start servers or run whole pipelines: a test using one is in the slow lane.
SLOW_FIXTURES = {"stack", "private_stack", "private_database", "kernel_env"}
#: Modules whose tests start servers of their own or run the `workbench` command.
SLOW_MODULES = {
    "test_stack.py",
    "test_db_cli.py",
    "test_cli.py",
    "test_evaluate.py",
    "test_replay.py",
    "test_unreachable.py",
    "test_live.py",
    "test_report.py",
    "test_determinism.py",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests that talk to servers ``slow``: ``pytest -m "not slow"`` is the fast
    lane (pure tests, about a minute), the default runs everything."""
    for item in items:
        slow_module = item.path.name in SLOW_MODULES
        if slow_module or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def isolated_settings(state_dir: Path, **overrides) -> Settings:
    """Settings that ignore the developer's own WORKBENCH_* environment."""
    return Settings.from_env({}, state_dir=state_dir, **overrides)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Endpoints]]:
    settings = isolated_settings(tmp_path_factory.mktemp("stack"))
    st = Stack(settings)
    endpoints, _ = st.up()
    yield settings, endpoints
    st.down()


@pytest.fixture
def private_database(tmp_path: Path):
    """A PostgreSQL of this test's own, so stopping it disturbs no other test."""
    from workbench.sinks.postgres import create_schema
    from workbench.stack.postgres import EmbeddedPostgres

    pg = EmbeddedPostgres(tmp_path)
    rec = pg.start(timeout_s=60)
    create_schema(pg.url(rec))
    yield pg, rec
    pg.stop()


def own_settings(base: Settings, endpoints: Endpoints, **overrides) -> Settings:
    """``base`` with topics and a consumer group of their own, created on the stack."""
    tag = f"t{uuid.uuid4().hex[:8]}"
    s = dataclasses.replace(
        base,
        topic_raw=f"{tag}.raw",
        topic_clean=f"{tag}.clean",
        topic_alerts=f"{tag}.alerts",
        topic_deadletter=f"{tag}.deadletter",
        topic_chaos=f"{tag}.chaos",
        consumer_group=f"{tag}-processor",
        batch_max_wait_s=0.2,
        **overrides,
    )
    job.prepare(s, endpoints)
    return s


@pytest.fixture
def settings(stack: tuple[Settings, Endpoints]) -> Settings:
    """Session-stack settings with topics and a consumer group of this test's own."""
    return own_settings(*stack)


@pytest.fixture
def endpoints(stack: tuple[Settings, Endpoints]) -> Endpoints:
    return stack[1]


class Background(list):
    """The failures of a processor running in a thread (empty while all is well), and the
    thread."""

    thread: threading.Thread


@contextlib.contextmanager
def in_background(processor) -> Iterator[Background]:
    """Run ``processor`` in a thread for the block; stop it after. Yields the list its
    failure (if any) lands in, so a test can assert on it while it runs."""
    stop, errors = threading.Event(), Background()

    def work() -> None:
        try:
            processor.run(stop)
        except Exception as exc:
            errors.append(exc)

    errors.thread = threading.Thread(target=work)
    errors.thread.start()
    try:
        yield errors
    finally:
        stop.set()
        errors.thread.join(60)


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment for a `workbench` subprocess that uses exactly ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    env.update(settings.to_env(), **extra)
    return env


def readings_in(machines: int, seconds: int) -> int:
    """Readings a chaos-free factory makes at the default rates: temperature, vibration,
    pressure and the motor current every second, battery every ten seconds (from the first
    tick)."""
    return machines * (4 * seconds + -(-seconds // 10))


def read_topic(settings: Settings, endpoints: Endpoints, topic: str, expected: int,
               timeout_s: float = 30) -> list:  # fmt: skip
    """Every data message of ``topic`` (up to ``expected``), read by partition assignment:
    no consumer group to join, so no rebalance wait. Control messages (end-of-run markers)
    are left out."""
    consumer = kafka.make_consumer(endpoints.broker, "test-reader", 6000)
    consumer.assign([kafka.TopicPartition(topic, p, 0) for p in range(settings.partitions)])
    got, deadline = [], time.monotonic() + timeout_s
    try:
        while len(got) < expected and time.monotonic() < deadline:
            got += [
                m
                for m in consumer.consume(1000, 0.2)
                if m.error() is None and "control" not in dict(m.headers() or ())
            ]
    finally:
        consumer.close()
    return got


NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.fixture
def kernel_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The kernel papermill starts inherits this process's environment: point it at the
    test's stack and topics (and say the run is headless, as `workbench report` does)."""
    for key, value in cli_env(settings, WORKBENCH_HEADLESS="1").items():
        monkeypatch.setenv(key, value)
    return settings


def run_notebook(name: str, out_dir: Path, **parameters) -> dict:
    """Execute ``notebooks/<name>.ipynb`` headless with ``parameters`` (use the
    ``kernel_env`` fixture first); return the results it recorded (``workbench.lab.record``)."""
    import nbformat
    import papermill

    from workbench.lab import recorded
    from workbench.lab.render import WIDGET_VIEW

    out = out_dir / f"{name}.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"), str(out), parameters=parameters,
        progress_bar=False, cwd=str(NOTEBOOKS),
    )  # fmt: skip
    # headless, a widget would be a dead frozen picture in the report (a bar stuck at 0 %)
    widgets = [i for i, cell in enumerate(nbformat.read(out, as_version=4).cells)
               for o in cell.get("outputs", []) if WIDGET_VIEW in o.get("data", {})]  # fmt: skip
    assert not widgets, f"{name}: cells {widgets} display widgets in a headless run"
    return recorded(out)


def assert_incremental_checkpoints(sink, group: str) -> None:
    """A sink stores a checkpoint's new segments with it, deletes those it drops in the
    same transaction, and reads the last checkpoint back with the segments still stored."""
    from workbench.processor.state import Checkpoint
    from workbench.processor.writer import _checkpoint_tables
    from workbench.sinks.columns import WriteBatch

    def write(offset: int, checkpoint: Checkpoint) -> None:
        states, segments, dropped = _checkpoint_tables([(group, "raw", 3, offset, checkpoint)])
        sink.write(WriteBatch(processor_state=states, processor_state_segments=segments,
                              dropped_segments=dropped))  # fmt: skip

    write(10, Checkpoint(b"one", {0: b"zero", 1: b"one"}))
    assert sink.checkpoint(group, "raw", 3) == (10, b"one", {0: b"zero", 1: b"one"})
    write(20, Checkpoint(b"two", {2: b"\x00two"}, dropped=[0]))
    assert sink.checkpoint(group, "raw", 3) == (20, b"two", {1: b"one", 2: b"\x00two"})
    write(30, Checkpoint(b"three"))  # nothing new, nothing dropped
    assert sink.checkpoint(group, "raw", 3) == (30, b"three", {1: b"one", 2: b"\x00two"})
    assert sink.checkpoint(group, "raw", 4) is None


def query_rows(url: str, query) -> list:
    """The rows a SQLAlchemy query gives on the database at ``url`` (an engine of its own)."""
    from workbench.sinks import engine

    eng = engine(url)
    try:
        with eng.connect() as conn:
            return list(conn.execute(query))
    finally:
        eng.dispose()


def restricted_gateway_key(settings: Settings, keys_file: Path) -> tuple[dict[str, str], str]:
    """A gateway key for machine m-0001 only, made with `workbench gateway key` into
    ``keys_file``; returns the gateway's environment (that key file, and the open key "k1")
    and the restricted key."""
    import json
    import subprocess

    made = subprocess.run(
        [WORKBENCH, "gateway", "key", "line-1", "--machines", "m-0001", "--json"],
        env=cli_env(settings, WORKBENCH_GATEWAY_KEYS_FILE=str(keys_file)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    env = {"WORKBENCH_GATEWAY_API_KEYS": "k1", "WORKBENCH_GATEWAY_KEYS_FILE": str(keys_file)}
    return env, json.loads(made.stdout)["key"]
