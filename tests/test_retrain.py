"""Scheduled retraining against the real stack: the runs it picks (or makes), the version it
stores, and the promotion policies (never, always, if-better), judged on a held-out run; and
what it records, trended by the reports' history."""

from __future__ import annotations

import json
import uuid

import pytest
import sqlalchemy as sa
from conftest import own_settings, query_rows
from test_cli import workbench

from workbench.lab import history
from workbench.models import ModelError, registry, retrain, train
from workbench.sinks import schema

#: Failures often enough that each run has a few (the simulator degrades a machine for
#: minutes before its runaway), and faults that are not failures.
CHAOS = "failure=0.15,drift=0.02,spike=0.001,stuck=0.01"


@pytest.fixture(scope="module")
def runs(stack):
    """Three chaos runs, oldest first: two to learn from, the last held out."""
    settings = own_settings(*stack)
    tag = uuid.uuid4().hex[:6]
    made = []
    for seed in (1, 2, 3):
        run_id = f"retrain-{tag}-{seed}"
        args = ["--machines", "6", "--duration", "20m", "--seed", str(seed), "--chaos", CHAOS]
        proc = workbench(settings, "run", *args, "--run-id", run_id, "--json")
        assert proc.returncode == 0, proc.stderr
        made.append(run_id)
    return settings, stack[1].database_url, made


def _name() -> str:
    return f"rt-{uuid.uuid4().hex[:6]}"


def test_never_stores_a_new_version_and_leaves_the_one_in_use(runs):
    _, url, (a, b, c) = runs
    name = _name()
    done = retrain.retrain(url, [a, b], c, policy="never", name=name)
    assert (done.version, done.promoted, done.old_version, done.old) == (1, False, None, None)
    assert registry.promoted_version(url, name) is None
    assert registry.get(url, name, 1).runs == [a, b]
    assert done.new == train.evaluate_version(url, name, 1, [c])["metrics"]
    registry.promote(url, name, 1)
    again = retrain.retrain(url, [a, b], c, policy="never", name=name)
    assert (again.version, again.promoted, again.in_use) == (2, False, 1)
    assert registry.promoted_version(url, name) == 1


def test_always_promotes_the_new_version(runs):
    _, url, (a, b, c) = runs
    name = _name()
    train.train(url, [a], name=name)
    registry.promote(url, name, 1)
    done = retrain.retrain(url, [a, b], c, policy="always", name=name)
    assert (done.version, done.old_version, done.promoted, done.in_use) == (2, 1, True, 2)
    assert registry.promoted_version(url, name) == 2
    assert done.old == train.evaluate_version(url, name, 1, [c])["metrics"]


def test_if_better_promotes_only_a_better_version(runs):
    _, url, (a, b, c) = runs
    name = _name()
    first = retrain.retrain(url, [a, b], c, name=name)
    assert first.promoted and first.reason == "no version was promoted"
    held = first.new["failures"]
    assert held["failures"] > 0 and held["recall"] > 0, "the held-out run should show failures"

    # the same runs and seed make the same model: a tie keeps the version in use
    tie = retrain.retrain(url, [a, b], c, name=name)
    assert tie.new == tie.old == first.new and not tie.promoted
    assert registry.promoted_version(url, name) == 1

    # a version that never alarms (threshold 0.999) is worse than one that predicts failures
    mute = retrain.retrain(url, [a, b], c, name=name, threshold=0.999)
    assert mute.new["failures"]["recall"] == 0 and not mute.promoted
    assert mute.reason.startswith(f"failure recall {held['recall']:g} -> 0 ")
    registry.promote(url, name, mute.version)
    better = retrain.retrain(url, [a, b], c, name=name)
    assert better.promoted and better.old_version == mute.version
    assert registry.promoted_version(url, name) == better.version


@pytest.mark.parametrize(
    "new, old, promote",
    [
        ((0.75, 0.8, 0.6), (0.5, 0.8, 0.9), True),  # more failures at the same precision
        ((0.75, 0.7, 0.9), (0.5, 0.8, 0.6), False),  # more failures, less precise
        ((0.5, 0.9, 0.6), (0.5, 0.8, 0.9), True),  # as many, more precisely
        ((0.5, 0.8, 0.9), (0.5, 0.8, 0.6), False),  # a tie on failures: AUC does not decide
        ((0.5, None, 0.9), (0.5, 0.8, 0.6), False),  # no alarm at all
        ((None, None, 0.7), (None, None, 0.6), True),  # no failure held out: the AUC
        ((None, None, 0.6), (None, None, 0.6), False),
        ((None, None, None), (None, None, 0.6), False),
    ],
)
def test_if_better_compares_failure_recall_at_no_worse_precision(new, old, promote):
    def metrics(recall, precision, auc):
        return {"failures": {"recall": recall, "precision": precision},
                "windows": {"roc_auc": auc}}  # fmt: skip

    assert retrain.decide("if-better", metrics(*new), metrics(*old))[0] is promote
    assert retrain.decide("always", metrics(*new), metrics(*old))[0] is True
    assert retrain.decide("never", metrics(*new), None)[0] is False
    assert retrain.decide("if-better", metrics(*new), None) == (True, "no version was promoted")


def test_an_unknown_policy_stops_before_training(runs):
    _, url, (a, b, c) = runs
    name = _name()
    with pytest.raises(ModelError, match="policy 'sometimes' is not known"):
        retrain.retrain(url, [a, b], c, policy="sometimes", name=name)
    assert registry.versions(url, name) == []


def test_the_runs_are_the_latest_with_failures_newest_held_out(runs):
    settings, url, _ = runs
    choice = retrain.choose_runs(settings, url, runs=2, source="stored")
    assert choice.ready and choice.made == [] and choice.stored == 3
    chosen = [*choice.train, choice.holdout]
    r, ce = schema.runs, schema.chaos_events
    started = dict(query_rows(url, sa.select(r.c.run_id, r.c.started_at)
                              .where(r.c.status == "completed")))  # fmt: skip
    failed = {
        row[0] for row in query_rows(url, sa.select(ce.c.run_id).where(ce.c.kind == "failure"))
    }
    assert set(chosen) <= failed
    assert [started[x] for x in chosen] == sorted(started[x] for x in chosen)  # oldest first
    # no completed run with failures started after the oldest chosen one is left out
    later = {x for x in failed & set(started) if started[x] >= started[chosen[0]]}
    assert later <= set(chosen)

    too_few = retrain.choose_runs(settings, url, runs=100_000, source="stored")
    assert not too_few.ready and too_few.made == [] and "100001 needed" in too_few.missing
    assert retrain.results(too_few, None)["skipped"] == too_few.missing


def test_the_factory_makes_seeded_runs_when_asked(runs):
    settings, url, _ = runs
    choice = retrain.choose_runs(settings, url, runs=1, source="factory", machines=2,
                                 duration_s=180, seed=5)  # fmt: skip
    assert choice.ready and choice.made == [*choice.train, choice.holdout] and choice.stored == 0
    r = schema.runs
    params = dict(
        query_rows(url, sa.select(r.c.run_id, r.c.params).where(r.c.run_id.in_(choice.made)))
    )
    assert [params[x]["seed"] for x in choice.made] == [5, 6]
    assert all(params[x]["chaos"]["failure"] == 0.1 and params[x]["machines"] == 2
               for x in choice.made)  # fmt: skip


def test_what_it_records_is_trended_and_a_regression_flagged(runs, tmp_path):
    _, url, (a, b, c) = runs
    name = _name()
    done = retrain.retrain(url, [a, b], c, policy="always", name=name)
    choice = retrain.RunChoice([a, b], c)
    good = retrain.results(choice, done)
    assert good["versions"] == {"new": f"{name} v1", "in_use": f"{name} v1", "before": None}
    assert good["new"] == good["in_use"] == retrain.summary(done.new) and good["old"] is None
    assert good["promoted"] is True and good["runs"]["holdout"] == c
    # a later run whose new version predicts fewer failures: a regression of its recall
    worse = json.loads(json.dumps(good))
    worse["new"]["recall"] = worse["in_use"]["recall"] = round(good["new"]["recall"] - 0.25, 3)
    for k, results in enumerate([good, good, worse]):
        day = tmp_path / f"2026-01-0{k + 1}"
        day.mkdir()
        (day / f"09_retrain-r{k}.json").write_text(json.dumps({
            "notebook": "09_retrain", "run_id": f"r{k}", "status": "completed",
            "started": f"2026-01-0{k + 1}T03:00:00+00:00", "seconds": 30.0,
            "parameters": {}, "effective": {"runs": 3}, "results": results}))  # fmt: skip
    (series,) = history.series(history.load(tmp_path))
    flagged = {c.name for c in series.regressions()}
    assert flagged == {"new.recall", "in_use.recall"} and not series.ok
