"""Predictions against the real stack: ``POST /v1/predict`` behind the gateway's key and its
twin ``workbench model predict``, scoring a machine's latest stored minute or a feature
vector given, each equal to the model's own probability of the same vector."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import uuid

import httpx
import pytest
from conftest import own_settings, restricted_gateway_key
from test_cli import workbench
from test_gateway import running_gateway

from workbench.models import features, precursor, registry, train

#: Frequent failures, and the faults that are not failures (as in test_models.py).
CHAOS = "failure=0.1,drift=0.02,spike=0.001,stuck=0.01"
MACHINE = "m-0003"


@pytest.fixture(scope="module")
def trained(stack):
    """Two chaos runs; a model learnt from the first, promoted, and the second's rows."""
    settings = own_settings(*stack)
    url = stack[1].database_url
    tag = uuid.uuid4().hex[:6]
    runs = []
    for seed in (1, 2):
        run_id = f"predict-{tag}-{seed}"
        args = ["--machines", "4", "--duration", "12m", "--seed", str(seed), "--chaos", CHAOS]
        proc = workbench(settings, "run", *args, "--run-id", run_id, "--json")
        assert proc.returncode == 0, proc.stderr
        runs.append(run_id)
    name = f"fp-{tag}"
    train.train(url, [runs[0]], name=name)
    registry.promote(url, name, 1)
    rows = [r for r in features.run_vectors(url, runs[1]) if r.machine_id == MACHINE]
    return settings, url, runs, name, rows


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()


def _expected(url: str, name: str, version: int, x: dict[str, float]) -> float:
    _, model = registry.load(url, name, version)
    return precursor.probability(model, x)


def test_the_cli_scores_the_machines_latest_minute_as_the_model_does(trained):
    settings, url, runs, name, rows = trained
    latest = rows[-1]
    proc = workbench(settings, "model", "predict", MACHINE, "--run", runs[1], "--name", name,
                     "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    p = _expected(url, name, 1, latest.x)
    meta = registry.get(url, name, 1)
    assert got == {
        "model": name, "version": 1, "probability": p, "alarm": p >= 0.5, "threshold": 0.5,
        "machine_id": MACHINE, "run_id": runs[1], "window_start": _iso(latest.start_ms),
        "window_end": _iso(latest.end_ms),
        "missing": sorted(set(meta.params["features"]) - set(latest.x)),
    }  # fmt: skip
    assert meta.params["features"] and len(meta.params["features"]) >= len(latest.x)
    text = workbench(settings, "model", "predict", MACHINE, "--run", runs[1], "--name", name)
    assert text.returncode == 0 and text.stdout.startswith(f"{MACHINE}, minute ")
    assert f"probability {p:.3f}" in text.stdout and f"{name} version 1" in text.stdout


@pytest.mark.parametrize(
    "args, complaint",
    [
        (["m-9999", "--run", "RUN"], "machine 'm-9999' has no final one-minute window"),
        ([MACHINE, "--run", "no-such-run"], "no run 'no-such-run'"),
        ([MACHINE, "--run", "RUN", "--version", "99"], "has no version 99"),
        ([MACHINE, "--run", "RUN", "--name", "never-promoted"],
         "no version of model never-promoted is promoted: run `workbench model promote"),
    ],
)  # fmt: skip
def test_the_cli_says_what_is_wrong_in_one_line(trained, args, complaint):
    settings, _, runs, name, _ = trained
    args = [runs[1] if a == "RUN" else a for a in args]
    if "--name" not in args:
        args += ["--name", name]
    proc = workbench(settings, "model", "predict", *args)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("workbench: error: ") and complaint in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_the_gateway_predicts_behind_the_key(trained, tmp_path):
    settings, url, runs, name, rows = trained
    env, restricted = restricted_gateway_key(settings, tmp_path / "keys.toml")
    with running_gateway(settings, **env) as gw:

        def post(body, key: str | None = "k1") -> httpx.Response:
            headers = {"X-API-Key": key} if key else {}
            kw = {"content": body} if isinstance(body, bytes) else {"json": body}
            return httpx.post(f"{gw.url}/v1/predict", headers=headers, timeout=60, **kw)

        # from storage: the machine's latest minute, as the model scores it
        latest = rows[-1]
        ok = post({"machine_id": MACHINE, "run": runs[1], "model": name})
        assert ok.status_code == 200, ok.text
        got = ok.json()
        assert got["probability"] == _expected(url, name, 1, latest.x)
        assert (got["version"], got["run_id"]) == (1, runs[1])
        assert (got["window_start"], got["window_end"]) == (_iso(latest.start_ms),
                                                             _iso(latest.end_ms))  # fmt: skip
        assert got["alarm"] == (got["probability"] >= got["threshold"] == 0.5)

        # from features given: an earlier row, whole, then with half its features
        x = rows[-4].x
        given = post({"machine_id": MACHINE, "model": name, "features": x})
        assert given.status_code == 200, given.text
        assert given.json()["probability"] == _expected(url, name, 1, x)
        assert given.json()["run_id"] is None and given.json()["window_start"] is None
        half = dict(sorted(x.items())[::2])
        partial = post({"machine_id": MACHINE, "model": name, "features": half}).json()
        assert partial["probability"] == _expected(url, name, 1, half)
        known = registry.get(url, name, 1).params["features"]
        assert partial["missing"] == sorted(set(known) - set(half)) != []

        # the key, the machines it may read
        assert post({"machine_id": MACHINE, "model": name}, key=None).status_code == 401
        assert post({"machine_id": MACHINE, "model": name}, key="wrong").status_code == 401
        refused = post({"machine_id": MACHINE, "model": name}, key=restricted)
        assert refused.status_code == 403 and MACHINE in refused.json()["detail"]
        allowed = post({"machine_id": "m-0001", "run": runs[1], "model": name}, key=restricted)
        assert allowed.status_code == 200, allowed.text

        # what the database does not have
        for body, said in [
            ({"machine_id": MACHINE, "run": "no-such-run"}, "no-such-run"),
            ({"machine_id": "m-9999", "run": runs[1]}, "m-9999"),
            ({"machine_id": MACHINE, "version": 99}, "has no version 99"),
        ]:
            missing = post(body | {"model": name})
            assert missing.status_code == 404 and said in missing.json()["detail"], missing.text

        # what cannot be scored
        typo = {"temperature.mean": 71.2, "temperature.avg": 3.0}
        unknown = post({"machine_id": MACHINE, "model": name, "features": typo})
        assert unknown.status_code == 422 and "temperature.avg" in unknown.json()["detail"]
        assert [e["loc"] for e in unknown.json()["errors"]] == [
            ["body", "features", "temperature.avg"]]  # fmt: skip
        word = post({"machine_id": MACHINE, "model": name, "features": {"temperature.mean": "hot"}})
        assert word.status_code == 422
        assert word.json()["errors"] == [{"loc": ["body", "features", "temperature.mean"],
                                          "msg": "must be a number", "input": "hot"}]  # fmt: skip
        for body, field in [
            ({"machine_id": MACHINE, "versoin": 2}, "versoin"),
            ({"machine_id": MACHINE, "version": "2"}, "version"),
            ({"run": runs[1]}, "machine_id"),
            ({"machine_id": MACHINE, "run": runs[1], "features": x}, "run"),
            ([MACHINE], None),
        ]:
            bad = post(body)
            assert bad.status_code == 422, bad.text
            assert field is None or [field] in [e["loc"][1:2] for e in bad.json()["errors"]]
        assert post(b"{not json").status_code == 400

        # nothing promoted: 409 with the command that fixes it; a version asked for is served
        other = f"{name}-unpromoted"
        train.train(url, [runs[0]], name=other)
        none = post({"machine_id": MACHINE, "model": other})
        assert none.status_code == 409
        assert f"workbench model promote VERSION --name {other}" in none.json()["detail"]
        asked = post({"machine_id": MACHINE, "model": other, "version": 1, "run": runs[1]})
        assert asked.status_code == 200 and asked.json()["version"] == 1

        # a promotion is served from the next request on, the old version stays cached
        second = train.train(url, runs, name=name, learner="forest")
        registry.promote(url, name, second.version)
        now = post({"machine_id": MACHINE, "run": runs[1], "model": name}).json()
        assert now["version"] == second.version
        assert now["probability"] == _expected(url, name, second.version, latest.x)
        registry.promote(url, name, 1)
        back = post({"machine_id": MACHINE, "run": runs[1], "model": name}).json()
        assert back == got

        # an anomaly model makes no predictions
        train.train(url, [runs[0]], kind="anomaly", name=f"{name}-hst")
        hst = post({"machine_id": MACHINE, "model": f"{name}-hst", "version": 1})
        assert hst.status_code == 422 and "anomaly" in hst.json()["detail"]


def test_the_gateway_loads_no_model_until_a_prediction_is_asked():
    """Ingest pays nothing for predictions: building the application imports neither River
    nor pandas nor the model code (the first ``POST /v1/predict`` does)."""
    code = (
        "import sys\n"
        "from workbench.gateway.app import GatewayConfig, create_app\n"
        "from workbench.gateway.keys import KeyRing\n"
        "create_app(None, GatewayConfig(KeyRing.from_sources('k', None), 'run'))\n"
        "print(sorted(m for m in ('river', 'pandas', 'sqlalchemy', 'workbench.models.predict')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
