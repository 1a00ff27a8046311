"""The promoted model inside the processor, against the real stack: every machine-minute of
a run scored once, by the version recorded with it, exactly as the model scores the stored
windows offline, and the same after a restart from a checkpoint."""

from __future__ import annotations

import json
import uuid

import pytest
import sqlalchemy as sa
from conftest import own_settings
from test_cli import workbench
from test_determinism import run_to_the_end

from workbench.job import simulate
from workbench.models import anomaly, features, precursor, registry
from workbench.processor.loop import Processor
from workbench.simulator.control import parse_chaos
from workbench.simulator.spec import SimulationSpec
from workbench.sinks import engine, schema

pytestmark = pytest.mark.slow

CHAOS = "failure=0.1,drift=0.02,spike=0.001"
#: 8 minutes of 4 machines with failures and no late readings: every minute's trend
#: features (five minutes back) are made, and a window's first final result is its last.
SPEC = SimulationSpec.build(machines=4, duration_s=480, seed=7, chaos=parse_chaos(CHAOS))


@pytest.fixture(scope="module")
def model(stack):
    """A failure-precursor model trained on one chaos run and promoted, under a name of its
    own (other tests' processors share the database and keep to the default name)."""
    settings = own_settings(*stack)
    name = f"pred-{uuid.uuid4().hex[:6]}"
    run_id = f"{name}-train"
    proc = workbench(settings, "run", "--machines", "6", "--duration", "12m", "--seed", "1",
                     "--chaos", CHAOS, "--run-id", run_id)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    trained = workbench(settings, "model", "train", "--runs", run_id, "--name", name, "--json")
    assert trained.returncode == 0, trained.stderr
    version = json.loads(trained.stdout)["version"]
    assert workbench(settings, "model", "promote", str(version), "--name", name).returncode == 0
    hst = workbench(settings, "model", "train", "--runs", run_id, "--kind", "anomaly", "--name",
                    f"{name}-hst", "--json")  # fmt: skip
    assert hst.returncode == 0, hst.stderr
    assert workbench(settings, "model", "promote", "1", "--name", f"{name}-hst").returncode == 0
    return name, version, stack[1].database_url


def _predictions(url: str, run_id: str, kind: str = "precursor") -> dict[tuple[str, int], tuple]:
    p = schema.predictions
    query = sa.select(p.c.machine_id, p.c.window_start, p.c.window_end, p.c.model, p.c.version,
                      p.c.score, p.c.alarm, p.c.features)  # fmt: skip
    query = query.where(p.c.run_id == run_id, p.c.kind == kind)
    eng = engine(url)
    try:
        with eng.connect() as conn:
            rows = conn.execute(query).all()
    finally:
        eng.dispose()
    out = {}
    for m, start, end, *rest in rows:
        at = (m, int(start.timestamp() * 1000))
        assert at not in out, f"two predictions for {at}"
        assert (end - start).total_seconds() == 60
        out[at] = tuple(rest)
    return out


def test_the_processor_scores_every_machine_minute_with_the_promoted_versions(stack, model):
    """The failure precursor and the anomaly model, both promoted and named in
    WORKBENCH_MODEL: each machine-minute's scores equal the models' own on the vector
    training makes from the stored windows."""
    name, version, url = model
    settings = own_settings(*stack, model=f"{name},{name}-hst")
    run_id = f"{name}-scored"
    proc = workbench(settings, "run", "--machines", "4", "--duration", "8m", "--seed", "2",
                     "--chaos", CHAOS, "--run-id", run_id, "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    got = _predictions(url, run_id)
    alarms = sum(v[3] for v in got.values())
    hst = _predictions(url, run_id, "anomaly")
    assert json.loads(proc.stdout)["predictions"] == [
        {"model": name, "version": version, "minutes": 4 * 8, "alarms": alarms},
        {"model": f"{name}-hst", "version": 1, "minutes": 4 * 8,
         "alarms": sum(v[3] for v in hst.values())},
    ]  # fmt: skip
    offline = features.run_vectors(url, run_id)
    assert len(offline) == 4 * 8
    assert got.keys() == {(r.machine_id, r.start_ms) for r in offline}
    _, loaded = registry.load(url, name, version)
    threshold = registry.get(url, name, version).params["threshold"]
    for r in offline:
        model_name, v, p, alarm, n = got[(r.machine_id, r.start_ms)]
        assert (model_name, v, n) == (name, version, len(r.x))
        assert p == pytest.approx(precursor.probability(loaded, r.x), abs=1e-12)
        assert alarm == (p >= threshold)
    assert len({p for _, _, p, _, _ in got.values()}) > 10  # a model that tells minutes apart
    _, detector = registry.load(url, f"{name}-hst", 1)
    frozen = anomaly.progressive(detector, offline, learn=False)
    assert [hst[(r.machine_id, r.start_ms)][2] for r in offline] == pytest.approx(frozen, abs=1e-12)
    assert all(hst[(r.machine_id, r.start_ms)][:2] == (f"{name}-hst", 1) for r in offline)


def test_without_a_promoted_version_nothing_is_scored(stack, model):
    name, _, url = model
    settings = own_settings(*stack, model=f"{name}-none")
    run_id = f"{name}-unscored"
    proc = workbench(settings, "run", "--machines", "2", "--duration", "2m", "--seed", "3",
                     "--run-id", run_id)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert _predictions(url, run_id) == {}
    off = own_settings(*stack, model="off")
    proc = workbench(off, "run", "--machines", "2", "--duration", "2m", "--seed", "3",
                     "--run-id", f"{run_id}-off")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert _predictions(url, f"{run_id}-off") == {}


def test_a_restart_from_a_checkpoint_gives_the_same_predictions(stack, model):
    """Undisturbed, and stopped after a third of the stream then restored from its
    checkpoint: the feature history travels in the checkpoint, so the minutes after the
    restart get the same trend features and the same predictions."""
    name, version, url = model
    base, endpoints = stack
    runs = {}
    for how in ("undisturbed", "restarted"):
        settings = own_settings(base, endpoints, model=name, batch_size=300)
        report = simulate(settings, endpoints, SPEC, f"{name}-{how}")
        if how == "restarted":
            first = Processor(settings, endpoints.broker, endpoints.database_url)
            first.run(max_messages=report.produced // 3)
        run_to_the_end(settings, endpoints, report)
        runs[how] = _predictions(url, report.run_id)
    assert len(runs["undisturbed"]) == 4 * 8
    assert runs["restarted"] == runs["undisturbed"]
    assert all(v[1] == version for v in runs["undisturbed"].values())
