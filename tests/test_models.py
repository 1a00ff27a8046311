"""`workbench model` against the real stack: runs made by the simulator and the processor,
models learnt from their windows and ground truth, stored in and loaded from PostgreSQL."""

from __future__ import annotations

import json
import uuid

import pytest
import sqlalchemy as sa
from conftest import own_settings
from test_cli import workbench

from workbench.models import ModelError, anomaly, precursor, registry, train
from workbench.processor.scoring import ALERTABLE, load_run, score
from workbench.sinks import engine, schema

#: A small factory where failures are frequent: about 7 in 12 minutes of 6 machines.
CHAOS = "failure=0.1,drift=0.02,spike=0.001,stuck=0.01"


@pytest.fixture(scope="module")
def runs(stack):
    """Two chaos runs (seeds 1 and 2) and a clean one, made once for the module."""
    settings = own_settings(*stack)
    tag = uuid.uuid4().hex[:6]
    made = {}
    for key, args in [
        ("a", ["--machines", "6", "--duration", "12m", "--seed", "1", "--chaos", CHAOS]),
        ("b", ["--machines", "6", "--duration", "12m", "--seed", "2", "--chaos", CHAOS]),
        ("clean", ["--machines", "2", "--duration", "2m", "--seed", "3"]),
    ]:
        run_id = f"models-{tag}-{key}"
        proc = workbench(settings, "run", *args, "--run-id", run_id, "--json")
        assert proc.returncode == 0, proc.stderr
        made[key] = run_id
    return settings, stack[1].database_url, made


def _model(settings, *args):
    proc = workbench(settings, "model", *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _failures(url: str, run_id: str) -> int:
    c = schema.chaos_events
    query = sa.select(sa.func.count()).where(c.c.run_id == run_id, c.c.kind == "failure")
    eng = engine(url)
    try:
        with eng.connect() as conn:
            return conn.execute(query).scalar_one()
    finally:
        eng.dispose()


def test_train_list_evaluate_promote(runs):
    settings, url, run = runs
    name = f"fp-{uuid.uuid4().hex[:6]}"
    first = json.loads(_model(settings, "train", "--runs", run["a"], "--name", name, "--json"))
    assert first["version"] == 1 and first["kind"] == "precursor" and first["runs"] == [run["a"]]
    m = first["metrics"]
    assert m["windows"]["windows"] == 6 * 12  # a vector per machine and minute
    assert m["failures"]["failures"] == _failures(url, run["a"]) > 0
    assert set(m["baselines"]) == {"runaway", "failure_rules"}
    assert first["params"]["horizon_s"] == 600 and first["params"]["learner"] == "logistic"
    second = json.loads(_model(settings, "train", "--runs", f"{run['a']},{run['b']}",
                               "--name", name, "--horizon", "2m", "--json"))  # fmt: skip
    assert second["version"] == 2 and second["params"]["horizon_s"] == 120
    assert second["metrics"]["windows"]["windows"] == 2 * 6 * 12

    listed = json.loads(_model(settings, "list", "--name", name, "--json"))["versions"]
    assert [(v["version"], v["promoted"]) for v in listed] == [(1, False), (2, False)]
    assert listed[0]["metrics"] == first["metrics"]

    evaluated = _model(settings, "evaluate", "1", "--name", name, "--runs", run["b"], "--json")
    again = _model(settings, "evaluate", "1", "--name", name, "--runs", run["b"], "--json")
    assert evaluated == again  # evaluating learns nothing
    e = json.loads(evaluated)
    assert e["trained_on"] == [run["a"]] and e["runs"] == [run["b"]]
    assert e["metrics"]["failures"]["failures"] == _failures(url, run["b"])
    assert e["metrics"]["windows"]["windows"] == 6 * 12

    assert "promoted" in _model(settings, "promote", "1", "--name", name)
    assert "promoted" in _model(settings, "promote", "2", "--name", name)
    listed = json.loads(_model(settings, "list", "--name", name, "--json"))["versions"]
    assert [(v["version"], v["promoted"]) for v in listed] == [(1, False), (2, True)]
    text = _model(settings, "list", "--name", name)
    assert [line.startswith("*") for line in text.splitlines()] == [False, True]
    meta, model = registry.promoted(url, name)
    assert meta.version == 2 and hasattr(model, "predict_proba_one")
    assert registry.promoted(url, name + "-none") is None


def test_anomaly_model_is_scored_per_fault_kind_beside_the_rules(runs):
    settings, url, run = runs
    name = f"an-{uuid.uuid4().hex[:6]}"
    made = json.loads(_model(settings, "train", "--kind", "anomaly", "--runs", run["a"],
                             "--name", name, "--json"))  # fmt: skip
    m = made["metrics"]
    assert made["kind"] == "anomaly" and m["windows"] == 6 * 12
    assert m["by_kind"]["failure"]["faults"] == m["rules"]["failure"]["faults"] > 0
    # the rules beside it are the rules' own score of the same run
    assert m["rules"] == {k: v for k, v in score(*load_run(url, run["a"])).items()
                          if k in ALERTABLE}  # fmt: skip
    assert all(s["detected"] <= s["faults"] for s in m["by_kind"].values())
    text = _model(settings, "evaluate", "1", "--name", name, "--runs", run["b"])
    assert "failure" in text and "rules" in text


def test_progressive_validation_scores_each_minute_before_learning_it(runs):
    _, url, run = runs
    (data,) = train.load_runs(url, [run["a"]])
    labels = precursor.label_rows(data.rows, data.faults, 120_000)
    scores = precursor.progressive(precursor.make_learner(), data.rows, labels)
    assert scores[0] == 0.5  # the first minute is scored by a model that learnt nothing
    # each score is that of a model that learnt exactly the earlier minutes whose labels were
    # known by then, in the order they became known: none of the future, not the minute itself
    for i in (1, 6, 20, 40, len(data.rows) - 1):
        model = precursor.make_learner()
        known = sorted((labels[j].known_ms, j) for j in range(i)
                       if labels[j].known_ms <= data.rows[i].end_ms)  # fmt: skip
        for _, j in known:
            model.learn_one(data.rows[j].x, labels[j].positive)
        assert precursor.probability(model, data.rows[i].x) == scores[i]
    assert len(set(scores)) > 1


def test_the_registry_round_trips_the_model(runs):
    _, url, run = runs
    (a,) = train.load_runs(url, [run["a"]])
    (b,) = train.load_runs(url, [run["b"]])
    name = f"rt-{uuid.uuid4().hex[:6]}"
    made = train.train(url, [run["a"]], name=name, horizon_s=300)
    _, loaded = registry.load(url, name, made.version)
    twin = precursor.make_learner()
    precursor.progressive(twin, a.rows, precursor.label_rows(a.rows, a.faults, 300_000))
    ours = [precursor.probability(loaded, r.x) for r in b.rows]
    assert ours == [precursor.probability(twin, r.x) for r in b.rows]
    assert len(set(ours)) > 1

    made = train.train(url, [run["a"]], kind="anomaly", name=name + "-hst")
    _, loaded = registry.load(url, name + "-hst", made.version)
    twin = anomaly.make_detector()
    anomaly.progressive(twin, a.rows)
    assert anomaly.progressive(loaded, b.rows, learn=False) == anomaly.progressive(
        twin, b.rows, learn=False
    )


def test_a_model_from_another_river_is_refused(runs):
    _, url, run = runs
    name = f"old-{uuid.uuid4().hex[:6]}"
    made = train.train(url, [run["a"]], name=name)
    m = schema.models
    eng = engine(url)
    try:
        with eng.begin() as conn:
            conn.execute(m.update().where(m.c.name == name).values(river_version="0.19.0"))
    finally:
        eng.dispose()
    with pytest.raises(ModelError, match=r"saved with River 0\.19\.0 and this is River"):
        registry.load(url, name, made.version)


@pytest.mark.parametrize(
    "args, complaint",
    [
        (["train", "--runs", "no-such-run"], "run no-such-run is not in"),
        (["train", "--runs", "CLEAN"], "has no ground truth"),
        (["evaluate", "999", "--runs", "A"], "has no version 999"),
        (["promote", "999", "--name", "never-trained"], "model never-trained has no version"),
        (["list", "--database", "sqlite:////nonexistent/models.db"], "no such file"),
    ],
)
def test_bad_input_is_one_line(runs, args, complaint):
    settings, _, run = runs
    args = [{"CLEAN": run["clean"], "A": run["a"]}.get(a, a) for a in args]
    proc = workbench(settings, "model", *args)
    assert proc.returncode == 1
    assert proc.stderr.startswith("workbench: error: ") and complaint in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_evaluate_judges_failure_alarms_as_the_runs_own_score_does():
    """An alarm during a failure's degradation is right however long before the runaway,
    and one during a degradation whose failure comes after the run's end is right too:
    the run's score says the wear explains both (no stack needed)."""
    from workbench.models import evaluate
    from workbench.processor.scoring import Alert, Fault, alert_outcomes

    minute = 60_000
    faults = [
        Fault("degradation", "m1", None, 5 * minute, 20 * minute),
        Fault("failure", "m1", None, 20 * minute, 22 * minute),
        Fault("degradation", "m2", None, 10 * minute, 30 * minute),  # fails after the run
        Fault("spike", "m3", "temperature", 15 * minute, 15 * minute),
    ]
    alarms = {  # machine, minute raised: right according to the run's score
        ("m1", 7): True,  # in the degradation, 13 minutes before the runaway
        ("m1", 21): True,  # during the failure
        ("m2", 15): True,  # in a degradation whose failure the run did not see
        ("m3", 15): False,  # a spike is no failure
        ("m1", 2): False,  # before the wear began
    }
    alerts = [Alert("aimed", m, None, t * minute, t * minute, ("failure",)) for m, t in alarms]
    explained = {(o["machine_id"], o["opened_ts"] // minute): bool(o["explains"])
                 for o in alert_outcomes(alerts, faults)}  # fmt: skip
    assert explained == alarms
    for (machine, t), right in alarms.items():
        judged = evaluate.failure_prediction([(machine, t * minute)], faults, 10 * minute)
        assert judged["true_alarms"] == int(right), (machine, t)
    every = evaluate.failure_prediction([(m, t * minute) for m, t in alarms], faults, 10 * minute)
    assert (every["predicted"], every["true_alarms"]) == (1, 3)
    assert every["lead_time_s"]["median"] == 13 * 60  # the first alarm in the wear
