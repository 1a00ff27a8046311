"""The health summary per machine against the real stack: a run with failures injected on
some machines and not on others, read back by the library, `workbench health` and the
gateway's ``GET /v1/machines/{id}/health``."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
import sqlalchemy as sa
from conftest import own_settings
from test_cli import workbench
from test_gateway import running_gateway

from workbench.models import health
from workbench.sinks import engine, schema

#: Four machines, 25 minutes, seed 1: one or two machines fail, the others do not (a failure
#: degrades for 5 to 15 minutes before its runaway: a run of 25 minutes sees some through).
RUN = ["--machines", "4", "--duration", "25m", "--seed", "1", "--chaos", "failure=0.03"]


@pytest.fixture(scope="module")
def run(stack):
    settings = own_settings(*stack)
    run_id = f"health-{uuid.uuid4().hex[:6]}"
    proc = workbench(settings, "run", *RUN, "--run-id", run_id, "--json")
    assert proc.returncode == 0, proc.stderr
    return settings, stack[1].database_url, run_id


def _rows(url: str, query) -> list:
    eng = engine(url)
    try:
        with eng.connect() as conn:
            return list(conn.execute(query))
    finally:
        eng.dispose()


def _failed(url: str, run_id: str) -> set[str]:
    c = schema.chaos_events
    query = sa.select(c.c.machine_id).where(c.c.run_id == run_id, c.c.kind == "failure")
    return {r.machine_id for r in _rows(url, query)}


def test_machines_with_injected_failures_score_lower(run):
    _, url, run_id = run
    found = health.health_all(url, run_id)
    failed = _failed(url, run_id)
    assert [h.machine_id for h in found] != [] and sorted(h.machine_id for h in found) == [
        "m-0001", "m-0002", "m-0003", "m-0004"]  # fmt: skip
    broken = [h.score for h in found if h.machine_id in failed]
    clean = [h.score for h in found if h.machine_id not in failed]
    assert broken and clean, "the seed should fail some machines and spare others"
    assert max(broken) < min(clean)
    assert [h.score for h in found] == sorted(h.score for h in found)  # worst first
    for h in found:
        assert h.score == round(max(0.0, 100 - sum(d.points for d in h.deductions)), 1)
        assert (h.indicators["failures"]["count"] > 0) == (h.machine_id in failed)
        if h.machine_id in failed:
            assert "failures" in [d.indicator for d in h.deductions]


def test_every_sentence_cites_numbers_the_database_holds(run):
    _, url, run_id = run
    a, w, r = schema.alerts, schema.window_stats, schema.readings
    for h in health.health_all(url, run_id):
        m = h.machine_id
        alerts = _rows(url, sa.select(a.c.rule, a.c.severity, a.c.detects, a.c.start_ts)
                       .where(a.c.run_id == run_id, a.c.machine_id == m)
                       .order_by(a.c.start_ts))  # fmt: skip
        failures = [x for x in alerts if x.severity == "critical" and "failure" in x.detects]
        first, *rest = h.narrative
        if failures:
            assert first.startswith(f"{len(failures)} failure alert(s) (")
            assert failures[-1].start_ts.strftime("%H:%M:%S") in first
            assert h.indicators["failures"]["last"] == failures[-1].start_ts.isoformat()
        else:
            assert first.startswith("No failure alert in the run's 25 min")
        others = len(alerts) - len(failures)
        assert h.indicators["alerts"]["count"] == others
        assert any(s.startswith(f"{others} other alert(s)") for s in rest) == (others > 0)

        # the drift sentence: the first and last thirds' means of the one-minute windows
        (sensor, d), *_ = sorted(h.indicators["drift"].items(),
                                 key=lambda kv: -abs(kv[1]["sigmas"]))  # fmt: skip
        means = [x.mean for x in _rows(url, sa.select(w.c.mean).where(
            w.c.run_id == run_id, w.c.machine_id == m, w.c.sensor_type == sensor,
            w.c.width_s == 60, w.c.final).order_by(w.c.window_start))]  # fmt: skip
        k = len(means) // 3
        assert d["early"] == round(sum(means[:k]) / k, 3)
        assert d["late"] == round(sum(means[-k:]) / k, 3)
        said = next(s for s in rest if s.startswith(sensor.capitalize()))
        assert (
            f"{d['early']:g}" in said and f"{d['late']:g}" in said and f"{d['sigmas']:+.2f}" in said
        )

        # data quality: the readings the windows counted are the readings stored
        stored = _rows(url, sa.select(sa.func.count(), sa.func.count(r.c.value))
                       .where(r.c.run_id == run_id, r.c.machine_id == m))[0]  # fmt: skip
        q = h.indicators["quality"]
        assert (q["readings"], q["nulls"]) == (stored[0], stored[0] - stored[1])
        assert h.narrative[-1].startswith(f"Data quality: {q['nulls']} of {stored[0]} readings")


def test_the_summary_is_deterministic_and_the_cli_prints_it(run):
    settings, url, run_id = run
    first = [h.to_dict() for h in health.health_all(url, run_id)]
    assert first == [h.to_dict() for h in health.health_all(url, run_id)]
    proc = workbench(settings, "health", "--run", run_id, "--json")
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert printed == {"run_id": run_id, "machines": json.loads(json.dumps(first))}
    one = workbench(settings, "health", "--run", run_id, "m-0002")
    assert one.returncode == 0 and one.stdout.startswith("m-0002: health ")

    for args, said in [(["--run", "no-such-run"], "no run 'no-such-run'"),
                       (["--run", run_id, "m-9999"], "machine 'm-9999'")]:  # fmt: skip
        bad = workbench(settings, "health", *args)
        assert bad.returncode == 1 and bad.stdout == ""
        assert bad.stderr.startswith("workbench: error:") and said in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1


def test_the_gateway_serves_health_behind_the_key(run, tmp_path):
    settings, url, run_id = run
    keys = tmp_path / "keys.toml"
    made = workbench(settings, "gateway", "key", "line-1", "--machines", "m-0001", "--json",
                     WORKBENCH_GATEWAY_KEYS_FILE=str(keys))  # fmt: skip
    assert made.returncode == 0, made.stderr
    restricted = json.loads(made.stdout)["key"]
    env = {"WORKBENCH_GATEWAY_API_KEYS": "k1", "WORKBENCH_GATEWAY_KEYS_FILE": str(keys)}
    with running_gateway(settings, **env) as gw:

        def get(machine: str, key: str | None = "k1", run: str | None = run_id):
            headers = {"X-API-Key": key} if key else {}
            params = {"run": run} if run else {}
            return httpx.get(f"{gw.url}/v1/machines/{machine}/health", headers=headers,
                             params=params, timeout=60)  # fmt: skip

        ok = get("m-0001")
        assert ok.status_code == 200, ok.text
        assert ok.json() == json.loads(json.dumps(health.health(url, run_id, "m-0001").to_dict()))
        assert get("m-0001", key=restricted).status_code == 200
        assert get("m-0001", key=None).status_code == 401
        assert get("m-0001", key="wrong").status_code == 401
        refused = get("m-0002", key=restricted)
        assert refused.status_code == 403 and "m-0002" in refused.json()["detail"]
        unknown = get("m-9999")
        assert unknown.status_code == 404 and "m-9999" in unknown.json()["detail"]
        no_run = get("m-0001", run="no-such-run")
        assert no_run.status_code == 404 and "no-such-run" in no_run.json()["detail"]
