"""Scheduled retraining: a new version of a failure precursor learnt from the latest runs,
judged beside the promoted version on a run neither learnt from, and promoted by a policy.

Notebook ``09_retrain`` calls these functions and records what they return, so ``workbench
report retrain`` (from cron, like every report) retrains, and ``workbench report --history``
trends the figures and flags a regression.

**The runs** (:func:`choose_runs`): the latest N + 1 completed runs with at least one
``failure`` in their ground truth and one-minute windows, by start; the newest is held out,
the N before it are learnt from, oldest first. ``source``: ``stored`` takes only those;
``factory`` makes N + 1 runs with a seeded chaos factory (seeds ``seed``, ``seed + 1``, ...);
``auto`` takes the stored ones and makes only those missing.

**The policy** (:func:`decide`): ``never`` stores the new version and leaves the promoted one;
``always`` promotes the new one; ``if-better`` promotes it when no version is promoted, or
when, on the held-out run, it predicts more failures at no worse alarm precision (or as many
at a better precision): warnings that come, and warnings that are right. A held-out run
without a failure cannot tell that, and the per-minute ROC AUC decides (higher wins). A tie
keeps the version in use.

>>> old = {"failures": {"recall": 0.5, "precision": 0.8}, "windows": {"roc_auc": 0.7}}
>>> decide("if-better", {"failures": {"recall": 0.75, "precision": 0.8},
...                      "windows": {"roc_auc": 0.6}}, old)
(True, 'failure recall 0.5 -> 0.75 at precision 0.8 -> 0.8')
>>> decide("if-better", {"failures": {"recall": 0.75, "precision": 0.6},
...                      "windows": {"roc_auc": 0.9}}, old)[0]
False
>>> decide("never", old, None), decide("always", old, old)[0]
((False, 'the policy is never'), True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from workbench.models import ModelError

if TYPE_CHECKING:
    from workbench.config import Settings

#: The promotion policies, the first the default.
POLICIES = ("if-better", "always", "never")
#: Where the runs come from, the first the default (see the module).
SOURCES = ("auto", "stored", "factory")
#: The factory's chaos besides failures: faults that are not failures, so that a model
#: learns to tell them apart (the mix of tests/test_models.py).
FACTORY_CHAOS = {"drift": 0.02, "spike": 0.001, "stuck": 0.01}


@dataclass(frozen=True)
class RunChoice:
    """The runs a new version learns from (oldest first) and the run held out; ``made``:
    those the factory made for it; ``missing``: why there is nothing to train on, if so."""

    train: list[str]
    holdout: str | None
    made: list[str] = field(default_factory=list)
    stored: int = 0
    missing: str | None = None

    @property
    def ready(self) -> bool:
        return self.missing is None

    def text(self) -> str:
        if not self.ready:
            return f"nothing to retrain on: {self.missing}"
        where = [f"{self.stored} stored with failures"] if self.stored else []
        where += [f"made by the factory: {', '.join(self.made)}"] if self.made else []
        return (f"learn from {', '.join(self.train)}, hold out {self.holdout} "
                f"({'; '.join(where)})")  # fmt: skip


def runs_with_failures(database_url: str, limit: int) -> list[str]:
    """The latest ``limit`` completed runs with a ``failure`` in their ground truth and
    one-minute windows, newest first."""
    import sqlalchemy as sa

    from workbench.models.features import WIDTH_S
    from workbench.sinks import engine, redact, schema

    r, c, w = schema.runs, schema.chaos_events, schema.window_stats
    failed = sa.select(c.c.run_id).where(c.c.run_id == r.c.run_id, c.c.kind == "failure")
    windowed = sa.select(w.c.run_id).where(w.c.run_id == r.c.run_id, w.c.width_s == WIDTH_S)
    query = (
        sa.select(r.c.run_id)
        .where(r.c.status == "completed", failed.exists(), windowed.exists())
        .order_by(r.c.started_at.desc(), r.c.run_id.desc())
        .limit(limit)
    )
    eng = engine(database_url)
    try:
        with eng.connect() as conn:
            return list(conn.execute(query).scalars())
    except sa.exc.OperationalError as exc:
        raise ModelError(f"cannot read runs from {redact(database_url)}: {exc.orig}") from None
    finally:
        eng.dispose()


def to_make(source: str, stored: int, wanted: int) -> int:
    """How many runs the factory makes when ``stored`` of the ``wanted`` runs are there.

    >>> [to_make(source, 1, 4) for source in SOURCES], to_make("auto", 9, 4)
    ([3, 0, 4], 0)
    """
    if source not in SOURCES:
        raise ModelError(f"source {source!r} is not known: expected one of {', '.join(SOURCES)}")
    return {"auto": max(0, wanted - stored), "stored": 0, "factory": wanted}[source]


def choose_runs(
    settings: Settings,
    database_url: str,
    runs: int = 3,
    source: str = SOURCES[0],
    machines: int = 10,
    duration_s: float = 1200.0,
    failure: float = 0.1,
    seed: int = 0,
) -> RunChoice:
    """The ``runs`` runs to learn from and the one to hold out (see the module), making
    those the ``source`` asks the factory for: ``machines`` machines for ``duration_s``
    seconds of event time, ``failure`` failures per machine and minute besides
    :data:`FACTORY_CHAOS`, seeds from ``seed``."""
    wanted = runs + 1
    found = [] if source == "factory" else runs_with_failures(database_url, wanted)
    made = make_runs(settings, to_make(source, len(found), wanted), machines, duration_s,
                     failure, seed)  # fmt: skip
    chosen = list(reversed(found[: wanted - len(made)])) + made  # oldest first
    stored = len(chosen) - len(made)
    if len(chosen) < wanted:
        return RunChoice([], None, made, stored, f"{len(chosen)} stored completed runs with "
                         f"failures, {wanted} needed ({runs} to learn from, 1 held out): make "
                         "some (workbench run --chaos failure=0.1 ...) or let the factory make "
                         "them (source auto or factory)")  # fmt: skip
    if faultless := without_faults(database_url, made):
        said = (
            f"the factory's runs {', '.join(faultless)} have no fault in their ground truth, "
            "nothing to learn from: give it more machines, time or failures"
        )
        return RunChoice([], None, made, stored, said)
    return RunChoice(chosen[:-1], chosen[-1], made, stored)


def without_faults(database_url: str, run_ids: Sequence[str]) -> list[str]:
    """The runs of ``run_ids`` without a single chaos event (a small factory's may have none)."""
    import sqlalchemy as sa

    from workbench.sinks import engine, schema

    c = schema.chaos_events
    query = sa.select(c.c.run_id).where(c.c.run_id.in_(run_ids)).distinct()
    eng = engine(database_url)
    try:
        with eng.connect() as conn:
            faulty = set(conn.execute(query).scalars())
    finally:
        eng.dispose()
    return [r for r in run_ids if r not in faulty]


def make_runs(
    settings: Settings,
    count: int,
    machines: int,
    duration_s: float,
    failure: float,
    seed: int,
) -> list[str]:
    """``count`` chaos runs, simulated, processed and stored, one seed each from ``seed``;
    their ids in the order made."""
    from workbench.job import run_experiment
    from workbench.simulator.spec import SimulationSpec

    made = []
    for k in range(count):
        chaos = FACTORY_CHAOS | {"failure": failure}
        spec = SimulationSpec.build(machines=machines, duration_s=duration_s, seed=seed + k,
                                    chaos=chaos)  # fmt: skip
        summary = run_experiment(settings, spec, keep_up=True)
        if not summary.reconciled:
            raise ModelError(f"the factory's run {summary.run_id} did not close its books")
        made.append(summary.run_id)
    return made


def better(new: dict[str, Any], old: dict[str, Any]) -> tuple[bool, str]:
    """Whether precursor metrics ``new`` beat ``old`` on the same held-out run, and why (see
    the module: failure recall at no worse precision, else the ROC AUC)."""
    nf, of = new["failures"], old["failures"]
    if nf["recall"] is not None:  # the held-out run has failures
        nr, orr = nf["recall"], of["recall"]
        npr, opr = nf["precision"] or 0.0, of["precision"] or 0.0  # no alarm: none right
        said = f"failure recall {orr:g} -> {nr:g} at precision {opr:g} -> {npr:g}"
        return (nr > orr and npr >= opr) or (nr == orr and npr > opr), said
    na, oa = new["windows"]["roc_auc"], old["windows"]["roc_auc"]
    if na is None or oa is None:
        return False, "the held-out run has no failure and cannot rank the minutes"
    return na > oa, f"no failure held out; per-minute ROC AUC {oa:g} -> {na:g}"


def check_policy(policy: str) -> None:
    """:class:`ModelError` for a policy that is not one of :data:`POLICIES`."""
    if policy not in POLICIES:
        raise ModelError(f"policy {policy!r} is not known: expected one of {', '.join(POLICIES)}")


def decide(policy: str, new: dict[str, Any], old: dict[str, Any] | None) -> tuple[bool, str]:
    """Whether to promote the version with metrics ``new`` over the promoted one's ``old``
    (None: none is promoted), and why."""
    check_policy(policy)
    if policy != "if-better":
        return policy == "always", f"the policy is {policy}"
    if old is None:
        return True, "no version was promoted"
    return better(new, old)


def summary(metrics: dict[str, Any] | None) -> dict[str, float | None] | None:
    """The figures a retraining records of a version on the held-out run (each named so that
    the reports' history knows which way is better: recall, precision, AUC, lead up)."""
    if metrics is None:
        return None
    f = metrics["failures"]
    return {"recall": f["recall"], "precision": f["precision"],
            "roc_auc": metrics["windows"]["roc_auc"],
            "lead_time_s": f["lead_time_s"]["median"]}  # fmt: skip


@dataclass(frozen=True)
class Retrained:
    """One retraining: the new version, the version promoted before it, their metrics on the
    held-out run (``old`` None when none was promoted), and the decision."""

    name: str
    version: int
    old_version: int | None
    train: list[str]
    holdout: str
    policy: str
    promoted: bool
    reason: str
    new: dict[str, Any]
    old: dict[str, Any] | None

    @property
    def in_use(self) -> int | None:
        """The version promoted after the decision."""
        return self.version if self.promoted else self.old_version

    def text(self) -> str:
        old = f"version {self.old_version}" if self.old_version else "no version"
        verdict = "promoted" if self.promoted else "not promoted"
        return (f"{self.name} version {self.version} learnt from {', '.join(self.train)}; "
                f"on {self.holdout} beside {old} in use: {verdict} ({self.reason})")  # fmt: skip

    def comparison(self) -> list[dict[str, Any]]:
        """The two versions' figures on the held-out run, one row each (for a table)."""
        rows = [("new", self.version, self.new), ("in use before", self.old_version, self.old)]
        return [{"version": v, "role": role} | summary(m) for role, v, m in rows if m]


def retrain(
    database_url: str,
    train_runs: Sequence[str],
    holdout: str,
    policy: str = POLICIES[0],
    name: str | None = None,
    learner: str = "logistic",
    horizon_s: float | None = None,
    threshold: float | None = None,
    seed: int = 0,
) -> Retrained:
    """Train a new version of ``name`` on ``train_runs``, evaluate it and the promoted
    version on ``holdout``, and promote the new one as ``policy`` says (see the module)."""
    from workbench.models import registry, train

    check_policy(policy)  # before anything is trained
    name = name or train.DEFAULT_NAMES["precursor"]
    before = registry.promoted_version(database_url, name)
    horizon_s = train.DEFAULT_HORIZON_S if horizon_s is None else horizon_s
    made = train.train(database_url, train_runs, "precursor", name, horizon_s, learner,
                       threshold, seed)  # fmt: skip
    new = train.evaluate_version(database_url, name, made.version, [holdout])["metrics"]
    old = None
    if before is not None:
        if registry.get(database_url, name, before).kind != "precursor":
            raise ModelError(f"the promoted version {before} of {name} is not a precursor")
        old = train.evaluate_version(database_url, name, before, [holdout])["metrics"]
    promote, reason = decide(policy, new, old)
    if promote:
        registry.promote(database_url, name, made.version)
    return Retrained(name, made.version, before, list(train_runs), holdout, policy, promote,
                     reason, new, old)  # fmt: skip


def results(choice: RunChoice, done: Retrained | None) -> dict[str, Any]:
    """What notebook 09 records (``workbench.lab.record`` each item): the figures of the new
    version, the one in use before and the one in use after (numbers, trended by the
    reports' history), and the versions, runs and decision (text and a flag)."""
    if done is None:
        return {"skipped": choice.missing, "promoted": None, "new": None, "old": None,
                "in_use": None, "runs": {"made": choice.made}}  # fmt: skip

    def label(version: int | None) -> str | None:  # text: a version number is no figure
        return f"{done.name} v{version}" if version else None

    return {
        "versions": {"new": label(done.version), "in_use": label(done.in_use),
                     "before": label(done.old_version)},
        "runs": {"train": done.train, "holdout": done.holdout, "made": choice.made},
        "promoted": done.promoted,
        "reason": done.reason,
        "new": summary(done.new),
        "old": summary(done.old),
        "in_use": summary(done.new if done.promoted else done.old),
    }  # fmt: skip
