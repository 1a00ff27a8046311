"""The health summary per machine against the real stack: a run with failures injected on
some machines and not on others, read back by the library, `workbench health` (with
``--recent`` and ``--save``) and the gateway's ``GET /v1/machines/{id}/health``; the recent
window's rules on rows made by hand; and the same on an edge-path SQLite file."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import httpx
import pytest
import sqlalchemy as sa
from conftest import own_settings, query_rows, restricted_gateway_key, run_notebook
from test_cli import workbench
from test_gateway import running_gateway

from workbench.models import health
from workbench.sinks import schema
from workbench.sinks.sqlite import SqliteSink

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


def _failed(url: str, run_id: str) -> set[str]:
    c = schema.chaos_events
    query = sa.select(c.c.machine_id).where(c.c.run_id == run_id, c.c.kind == "failure")
    return {r.machine_id for r in query_rows(url, query)}


def _latest_reading(url: str, run_id: str) -> dt.datetime:
    r = schema.readings
    return query_rows(url, sa.select(sa.func.max(r.c.ts)).where(r.c.run_id == run_id))[0][0]


def _alerts(url: str, run_id: str, machine_id: str) -> list:
    a = schema.alerts
    query = (sa.select(a.c.rule, a.c.severity, a.c.detects, a.c.start_ts, a.c.closed_ts)
             .where(a.c.run_id == run_id, a.c.machine_id == machine_id)
             .order_by(a.c.start_ts, a.c.rule))  # fmt: skip
    return query_rows(url, query)


def _recomputed(url: str, run_id: str, machine_id: str, recent_s: float) -> dict:
    """The failure and alert indicators, their points and sentences' figures, from the rows."""
    as_of = _latest_reading(url, run_id)
    cutoff = as_of - dt.timedelta(seconds=recent_s)
    alerts = _alerts(url, run_id, machine_id)
    failures = [x for x in alerts if x.severity == "critical" and "failure" in x.detects]
    others = [x for x in alerts if x not in failures]

    def recent(x) -> bool:
        return x.closed_ts is None or x.closed_ts >= cutoff

    fresh_failures = sum(map(recent, failures))
    since_s = round((as_of - failures[-1].start_ts).total_seconds()) if failures else None
    fresh_others = sum(map(recent, others))
    points = {}
    if fresh_failures:
        points["failures"] = min(40.0, 25.0 + 5.0 * (fresh_failures - 1))
    elif failures:
        points["since_failure"] = round(min(10.0, 10.0 * recent_s / since_s), 1)
    if fresh_others:
        points["alerts"] = min(20.0, 3.0 * fresh_others)
    return {"as_of": as_of, "failures": failures, "fresh_failures": fresh_failures,
            "since_s": since_s, "others": len(others), "fresh_others": fresh_others,
            "points": points}  # fmt: skip


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
    w, r = schema.window_stats, schema.readings
    for h in health.health_all(url, run_id):
        m = h.machine_id
        x = _recomputed(url, run_id, m, health.RECENT_S)
        failures = x["failures"]
        first, *rest = h.narrative
        if failures:
            rules = ", ".join(sorted({f.rule for f in failures}))
            assert first.startswith(
                f"{len(failures)} failure alert(s) ({rules}), {x['fresh_failures']} in the "
                "last 60 min; the last began at "
            )
            assert failures[-1].start_ts.strftime("%H:%M:%S") in first
            assert f"{x['since_s']} s before the run's latest reading" in first
            assert x["as_of"].strftime("%H:%M:%S") in first
            assert h.indicators["failures"]["last"] == failures[-1].start_ts.isoformat()
        else:
            assert first.startswith("No failure alert in the run's 25 min")
        others = x["others"]
        assert h.indicators["alerts"]["count"] == others
        assert any(s.startswith(f"{others} other alert(s)") for s in rest) == (others > 0)

        # the drift sentence: the first and last thirds' means of the one-minute windows
        (sensor, d), *_ = sorted(h.indicators["drift"].items(),
                                 key=lambda kv: -abs(kv[1]["sigmas"]))  # fmt: skip
        means = [x.mean for x in query_rows(url, sa.select(w.c.mean).where(
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
        stored = query_rows(url, sa.select(sa.func.count(), sa.func.count(r.c.value))
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
    assert printed == {"run_id": run_id, "recent_s": 3600.0,
                       "machines": json.loads(json.dumps(first))}  # fmt: skip
    short = workbench(settings, "health", "--run", run_id, "--recent", "4m", "--json")
    assert short.returncode == 0, short.stderr
    assert json.loads(short.stdout)["machines"] == json.loads(
        json.dumps([h.to_dict() for h in health.health_all(url, run_id, recent_s=240)])
    )
    one = workbench(settings, "health", "--run", run_id, "m-0002")
    assert one.returncode == 0 and one.stdout.startswith("m-0002: health ")

    for args, said in [(["--run", "no-such-run"], "no run 'no-such-run'"),
                       (["--run", run_id, "m-9999"], "machine 'm-9999'")]:  # fmt: skip
        bad = workbench(settings, "health", *args)
        assert bad.returncode == 1 and bad.stdout == ""
        assert bad.stderr.startswith("workbench: error:") and said in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    usage = workbench(settings, "health", "--recent", "soon")  # argparse's usage error
    assert usage.returncode == 2 and "argument --recent: duration='soon'" in usage.stderr


def test_the_gateway_serves_health_behind_the_key(run, tmp_path):
    settings, url, run_id = run
    env, restricted = restricted_gateway_key(settings, tmp_path / "keys.toml")
    with running_gateway(settings, **env) as gw:

        def get(machine: str, key: str | None = "k1", run: str | None = run_id, **params):
            headers = {"X-API-Key": key} if key else {}
            params |= {"run": run} if run else {}
            return httpx.get(f"{gw.url}/v1/machines/{machine}/health", headers=headers,
                             params=params, timeout=60)  # fmt: skip

        ok = get("m-0001")
        assert ok.status_code == 200, ok.text
        assert ok.json() == json.loads(json.dumps(health.health(url, run_id, "m-0001").to_dict()))
        for recent, seconds in (("4m", 240), ("90", 90)):
            short = get("m-0001", recent=recent)
            assert short.status_code == 200, short.text
            expected = health.health(url, run_id, "m-0001", recent_s=seconds).to_dict()
            assert short.json() == json.loads(json.dumps(expected))
        for bad in ("soon", "0", "-5m"):
            refused = get("m-0001", recent=bad)
            assert refused.status_code == 422 and "recent=" in refused.json()["detail"], bad
        assert get("m-0001", key=restricted).status_code == 200
        assert get("m-0001", key=None).status_code == 401
        assert get("m-0001", key="wrong").status_code == 401
        refused = get("m-0002", key=restricted)
        assert refused.status_code == 403 and "m-0002" in refused.json()["detail"]
        unknown = get("m-9999")
        assert unknown.status_code == 404 and "m-9999" in unknown.json()["detail"]
        no_run = get("m-0001", run="no-such-run")
        assert no_run.status_code == 404 and "no-such-run" in no_run.json()["detail"]


@pytest.mark.parametrize("recent_s", [3600.0, 240.0, 60.0])
def test_recent_alerts_cost_full_points_and_older_ones_less(run, recent_s):
    """Each machine's failure and alert points, recomputed from the alert rows: recent ones
    (open at some time in the window before the run's latest reading) in full, an older
    failure by the time since it began, older alerts of other rules not at all."""
    _, url, run_id = run
    window = f"{recent_s / 60:g} min"
    found = health.health_all(url, run_id, recent_s=recent_s)
    for h in found:
        x = _recomputed(url, run_id, h.machine_id, recent_s)
        assert h.indicators["as_of"] == x["as_of"].isoformat()  # the run's latest reading
        assert h.indicators["recent_s"] == recent_s
        got = {d.indicator: d.points for d in h.deductions}
        for indicator in ("failures", "since_failure", "alerts"):
            assert got.get(indicator) == x["points"].get(indicator), (h.machine_id, indicator)
        f = h.indicators["failures"]
        assert (f["count"], f["recent"], f["since_s"]) == (
            len(x["failures"]), x["fresh_failures"], x["since_s"])  # fmt: skip
        if x["failures"]:
            assert f"{x['fresh_failures'] or 'none'} in the last {window};" in h.narrative[0]
        if "since_failure" in got:
            why = next(d.why for d in h.deductions if d.indicator == "since_failure")
            since = x["since_s"]
            assert why == f"the last began {since} s ago: 10 x {recent_s:g} / {since} s"
        a = h.indicators["alerts"]
        assert a["recent"] == x["fresh_others"] == sum(a["recent_by_rule"].values())
        assert a["count"] == a["recent"] + sum(a["older_by_rule"].values())
        if x["others"]:
            said = next(s for s in h.narrative if " other alert(s): " in s)
            assert f": {x['fresh_others'] or 'none'} in the last {window}" in said
            assert ("older, listed only" in said) == (x["fresh_others"] < x["others"])
    # a shorter window never costs more; the default one counts every alert of a 25-min run
    default = {h.machine_id: h.score for h in health.health_all(url, run_id)}
    assert all(h.score >= default[h.machine_id] for h in found)
    if recent_s == 60.0:  # the failures began minutes before the end: none is recent
        failed = [h for h in found if h.indicators["failures"]["count"]]
        older = [h for h in failed if not h.indicators["failures"]["recent"]]
        assert all("since_failure" in [d.indicator for d in h.deductions] for h in older)
        assert any(h.score > default[h.machine_id] for h in failed)


def test_the_time_since_the_last_failure_agrees_with_the_ground_truth(run):
    """The failure alerts it is measured from began inside the injected failure (or right
    after its runaway ended in the shutdown)."""
    _, url, run_id = run
    c = schema.chaos_events
    truth = query_rows(url, sa.select(c.c.machine_id, c.c.start_ts, c.c.end_ts)
                  .where(c.c.run_id == run_id, c.c.kind == "failure"))  # fmt: skip
    as_of = _latest_reading(url, run_id)
    for h in health.health_all(url, run_id):
        f = h.indicators["failures"]
        events = [t for t in truth if t.machine_id == h.machine_id]
        if not f["count"]:
            continue
        last = dt.datetime.fromisoformat(f["last"])
        assert any(t.start_ts <= last <= t.end_ts + dt.timedelta(seconds=60) for t in events)
        assert f["since_s"] == round((as_of - last).total_seconds())


def test_save_upserts_one_row_per_machine_for_grafana(run):
    settings, url, run_id = run
    mh = schema.machine_health
    for recent in ("2m", "4m"):  # twice: the second replaces the first
        proc = workbench(settings, "health", "--run", run_id, "--recent", recent, "--save",
                         "--json")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["saved"] == 4
    order = (mh.c.score, mh.c.machine_id)
    stored = query_rows(url, sa.select(mh).where(mh.c.run_id == run_id).order_by(*order))
    columns = ("machine_id", "score", "worst_indicator", "narrative", "deductions", "recent_s",
               "as_of")  # fmt: skip
    expected = [health.row(h) for h in health.health_all(url, run_id, recent_s=240)]
    assert [[getattr(r, c) for c in columns] for r in stored] == [
        [e[c] for c in columns] for e in expected
    ]
    assert {e["recent_s"] for e in expected} == {240.0}
    plain = json.loads(json.dumps(expected[0]["indicators"]))
    assert stored[0].indicators == plain
    worst = stored[0]
    assert worst.worst_indicator == max(worst.deductions, key=lambda d: d["points"])["indicator"]
    counts = workbench(settings, "db", "counts", "--run-id", run_id, "--json")
    assert json.loads(counts.stdout)["tables"]["machine_health"] == 4
    text = workbench(settings, "health", "--run", run_id, "m-0001", "--save")
    assert text.stdout.rstrip().endswith("saved 1 machine(s) to the machine_health table")


def _window(sensor: str, minute: int, mean: float = 1.0) -> health._Window:
    start = T0 + dt.timedelta(minutes=minute)
    return health._Window(sensor, start, start + dt.timedelta(minutes=1), 60, 0, mean, 0.1)


def _alert(rule: str, opened_min: float, closed_min: float | None) -> health._Alert:
    critical = rule == "shutdown"
    at = T0 + dt.timedelta(minutes=opened_min)
    closed = None if closed_min is None else T0 + dt.timedelta(minutes=closed_min)
    return health._Alert(rule, "critical" if critical else "warning",
                         ["failure"] if critical else ["spike"], at, at, closed)  # fmt: skip


T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_the_recent_window_on_rows_made_by_hand():
    """A 60-minute run, its latest reading at 01:00: a failure from 00:10 to 00:12, a spike
    closed at 00:20, one still open since 00:05, one at 00:55."""
    windows = {"pressure": [_window("pressure", i) for i in range(60)]}
    alerts = [_alert("unexplained", 5, None), _alert("shutdown", 10, 12),
              _alert("spike", 19, 20), _alert("spike", 55, 55.5)]  # fmt: skip
    data = health._Run("r", T0 + dt.timedelta(hours=1), {"m": windows}, {"m": alerts}, {})

    def summary(recent_s: float) -> tuple[dict[str, float], list[str]]:
        h = health._summarise(data, "m", recent_s)
        return {d.indicator: d.points for d in h.deductions}, h.narrative

    # an hour: everything is recent
    points, said = summary(3600)
    assert points == {"failures": 25.0, "alerts": 9.0}
    assert said[0] == ("1 failure alert(s) (shutdown), 1 in the last 60 min; the last began at "
                       "2026-01-01 00:10:00, 3000 s before the run's latest reading "
                       "(2026-01-01 01:00:00).")  # fmt: skip
    assert said[1] == "3 other alert(s): 3 in the last 60 min (2 spike, 1 unexplained)."
    # 30 minutes: the failure (closed at 00:12) costs 10 x 1800 / 3000; the spike closed at
    # 00:20 is listed only; the alert open since 00:05 is still news
    points, said = summary(1800)
    assert points == {"since_failure": 6.0, "alerts": 6.0}
    assert "none in the last 30 min" in said[0]
    assert said[1] == ("3 other alert(s): 2 in the last 30 min (1 spike, 1 unexplained), "
                       "1 older, listed only (1 spike).")  # fmt: skip
    # 90 seconds: only the open alert and the spike at 00:55 ... closed at 00:55:30, older
    points, said = summary(90)
    assert points == {"since_failure": 0.3, "alerts": 3.0}
    assert said[1].startswith("3 other alert(s): 1 in the last 90 s (1 unexplained), 2 older")
    assert health._summarise(data, "m", 90).worst == "alerts"
    with pytest.raises(health.ConfigError, match="recent"):
        health.recent_seconds("0")


def test_health_of_an_edge_sqlite_file_is_read_and_saved_there(settings, tmp_path):
    """The edge path registers no run: the run is known by its windows; times come back
    naive from SQLite and are read as UTC."""
    url = f"sqlite:///{tmp_path / 'edge.db'}"
    ms = int(T0.timestamp() * 1000)
    machines = ("m-1", "m-2")
    windows = [("edge", m, "pressure", 60, ms + i * 60_000, ms + (i + 1) * 60_000, 60, 0, 0,
                5.0, 4.0, 6.0, 0.2, 5.5, True, 0) for m in machines for i in range(10)]  # fmt: skip
    stats = [("edge", m, "pressure", 600, 0, 0, 5.0, 0.2, 5.0, 0.2, 5.5, 5.0, 0.1, 0,
              ms + 599_000) for m in machines]  # fmt: skip
    readings = [("edge", "m-1", "pressure", 599, ms + 599_000, 5.0, 0, False, None, None, None)]
    shutdown = ("edge", "shutdown/m-1/0", "shutdown", "threshold", "critical", "closed", "m-1",
                "pressure", ms + 120_000, ms + 122_000, ms + 180_000, ms + 180_000, 9.0, 3,
                ["failure"])  # fmt: skip
    with SqliteSink(url) as sink:
        sink.write(readings=readings, windows=windows, alerts=[shutdown], sensor_stats=stats)
    for _ in range(2):
        proc = workbench(settings, "health", "--database", url, "--run", "edge", "--recent",
                         "5m", "--save", "--json")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["saved"] == 2 and [m["machine_id"] for m in out["machines"]] == ["m-1", "m-2"]
    m1 = out["machines"][0]
    assert m1["indicators"]["as_of"] == "2026-01-01T00:09:59+00:00"
    assert m1["indicators"]["failures"] == {"count": 1, "recent": 0,
                                            "last": "2026-01-01T00:02:00+00:00",
                                            "since_s": 479}  # fmt: skip
    assert m1["deductions"][0]["points"] == round(10 * 300 / 479, 1)
    eng = sa.create_engine(url)
    try:
        with eng.connect() as conn:
            mh = schema.machine_health
            rows = list(conn.execute(sa.select(mh.c.machine_id, mh.c.score, mh.c.worst_indicator)
                                     .order_by(mh.c.machine_id)))  # fmt: skip
    finally:
        eng.dispose()
    assert rows == [("m-1", m1["score"], "since_failure"), ("m-2", 100.0, None)]
    latest = workbench(settings, "health", "--database", url)  # the newest windows' run
    assert latest.returncode == 0 and "(run edge)" in latest.stdout, latest.stderr


def test_the_health_notebook_shows_and_saves_what_health_all_computes(kernel_env, endpoints,
                                                                      tmp_path):  # fmt: skip
    """notebooks/08_machine_health.ipynb, headless: its recorded scores are health_all()'s
    with its recent window, and its save replaced the run's own (default window) rows."""
    got = run_notebook("08_machine_health", tmp_path, machines=3, duration_s=1200, seed=5,
                       failure=0.05, drift=0.0, power=0.0, recent_min=3)  # fmt: skip
    url, run_id = endpoints.database_url, got["run_id"]
    found = health.health_all(url, run_id, recent_s=180)
    assert got["health_by_machine"] == {h.machine_id: h.score for h in found}
    assert got["machines"] == got["saved"] == 3 and got["health_min"] == found[0].score
    assert got["worst"] == {"machine": found[0].machine_id, "indicator": found[0].worst}
    assert got["failed_machines"] == sorted(_failed(url, run_id))
    assert got["failure_alerts"] == sum(h.indicators["failures"]["count"] for h in found) > 0
    mh = schema.machine_health
    stored = query_rows(url, sa.select(mh.c.machine_id, mh.c.score, mh.c.recent_s)
                   .where(mh.c.run_id == run_id).order_by(mh.c.machine_id))  # fmt: skip
    assert [tuple(r) for r in stored] == sorted((h.machine_id, h.score, 180.0) for h in found)
