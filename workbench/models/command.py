"""``workbench model``: train, list, evaluate, promote and predict with models of the registry.

Only argument parsing and printing; :mod:`workbench.models.train` and
:mod:`workbench.models.registry` do the work (River and pandas are imported when a
subcommand runs, not when the command line is built).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from workbench.config import Settings
from workbench.simulator.control import duration_argument

#: The model ``evaluate`` and ``promote`` mean without ``--name``.
DEFAULT_NAME = "failure-precursor"


def _runs(text: str) -> list[str]:
    runs = [r.strip() for r in text.split(",") if r.strip()]
    if not runs:
        raise argparse.ArgumentTypeError(f"{text!r} names no run: expected RUN_ID[,RUN_ID...]")
    return runs


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The subcommands of ``workbench model``."""
    sub = p.add_subparsers(dest="model_command", required=True, metavar="MODEL_COMMAND")

    def common(q: argparse.ArgumentParser, what: str) -> None:
        q.add_argument("--database", metavar="URL",
                       help="postgresql://... or sqlite:///PATH (default: WORKBENCH_DATABASE_URL, "
                       "else the embedded PostgreSQL)")  # fmt: skip
        q.add_argument("--json", action="store_true", help=f"print {what} as one JSON object")

    q = sub.add_parser(
        "train",
        help="learn a model from stored runs' ground truth and store it as a new version",
        description="Learn from the runs' one-minute windows and chaos ground truth by "
        "progressive validation (each machine-minute scored before it is learnt from, once "
        "its label is known), store the model as the next version of its name, and print "
        "the version and its metrics.",
    )
    q.add_argument("--runs", type=_runs, required=True, metavar="RUN_ID[,RUN_ID...]",
                   help="the stored runs to learn from, in this order")  # fmt: skip
    q.add_argument("--kind", choices=("precursor", "anomaly"), default="precursor",
                   help="precursor: will the machine fail within the horizon (default); "
                   "anomaly: Half-Space Trees, unsupervised")  # fmt: skip
    q.add_argument("--name", help="store under this name (default failure-precursor / anomaly)")
    q.add_argument("--horizon", type=duration_argument, default=600.0, metavar="DURATION",
                   help="precursor: warn this long before a failure (default 10m)")  # fmt: skip
    q.add_argument("--learner", choices=("logistic", "tree", "forest"), default="logistic",
                   help="precursor: the River classifier (default logistic)")  # fmt: skip
    q.add_argument(
        "--threshold",
        type=float,
        help="alarm at this probability (precursor, 0.5) or score (anomaly, 0.8)",
    )
    q.add_argument("--seed", type=int, default=0, help="seed of the learner's randomness (0)")
    common(q, "the new version and its metrics")

    q = sub.add_parser("list", help="the stored versions, their metrics, and the promoted ones")
    q.add_argument("--name", help="only this model")
    common(q, "the versions")

    q = sub.add_parser(
        "evaluate",
        help="score stored runs with a stored version, learning nothing from them",
        description="Score the runs with the version and compare with the rules: for a "
        "precursor, failures predicted, alarm precision and lead time beside the runaway "
        "rule's and every failure rule's; for an anomaly model, recall and precision per "
        "fault kind beside the rules'.",
    )
    q.add_argument("version", type=int, metavar="VERSION")
    q.add_argument("--runs", type=_runs, required=True, metavar="RUN_ID[,RUN_ID...]")
    q.add_argument("--name", default=DEFAULT_NAME, help=f"the model (default {DEFAULT_NAME})")
    common(q, "the metrics")

    q = sub.add_parser("promote", help="make a version the one in use for its name")
    q.add_argument("version", type=int, metavar="VERSION")
    q.add_argument("--name", default=DEFAULT_NAME, help=f"the model (default {DEFAULT_NAME})")
    common(q, "the promoted version")

    q = sub.add_parser(
        "predict",
        help="a machine's failure probability now, by the promoted (or a given) version",
        description="Score the machine's latest final one-minute window of a stored run with "
        "a precursor model, as the gateway's POST /v1/predict does: the probability, whether "
        "it is an alarm at the model's threshold, the minute scored, and the model's features "
        "the minute lacks.",
    )
    q.add_argument("machine_id", metavar="MACHINE_ID")
    q.add_argument("--run", metavar="RUN_ID", help="the stored run (default: the latest run)")
    q.add_argument("--name", default=DEFAULT_NAME, help=f"the model (default {DEFAULT_NAME})")
    q.add_argument("--version", type=int, metavar="N",
                   help="this version (default: the promoted one)")  # fmt: skip
    common(q, "the prediction")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run one ``workbench model`` subcommand; errors are :class:`ModelError` lines."""
    from workbench import job
    from workbench.models import registry, train

    with job.database(settings, args.database) as url:
        registry.ensure_table(url)
        if args.model_command == "train":
            made = train.train(url, args.runs, args.kind, args.name, args.horizon, args.learner,
                               args.threshold, args.seed)  # fmt: skip
            data, text = made.to_dict(), describe(made.to_dict())
        elif args.model_command == "list":
            found = registry.versions(url, args.name)
            data = {"versions": [v.to_dict() for v in found]}
            text = "\n".join(_list_line(v.to_dict()) for v in found) or "no models stored yet"
        elif args.model_command == "predict":
            from workbench.models.predict import Predictor, PredictRequest

            asked = PredictRequest(args.machine_id, args.run, None, args.name, args.version)
            made = Predictor(url).predict(asked)
            data, text = made.to_dict(), made.text()
        elif args.model_command == "evaluate":
            data = train.evaluate_version(url, args.name, args.version, args.runs)
            text = describe(data)
        else:
            promoted = registry.promote(url, args.name, args.version)
            data, text = promoted.to_dict(), f"{promoted.name} version {promoted.version} promoted"
    print(json.dumps(data, default=str) if args.json else text)
    return 0


def describe(entry: dict[str, Any]) -> str:
    """A version's (or an evaluation's) metrics as a few lines of text."""
    m = entry["metrics"]
    runs = entry["runs"]
    head = f"{entry['name']} version {entry['version']} ({entry['kind']})"
    if "trained_on" in entry:
        head += f" on {', '.join(runs)} (trained on {', '.join(entry['trained_on'])})"
    else:
        p = entry["params"]
        detail = f", {p['learner']}, horizon {p['horizon_s']:g} s" if "learner" in p else ""
        head += f"{detail}, threshold {p['threshold']:g}; learnt from {', '.join(runs)}"
    if entry["kind"] == "anomaly":
        lines = [head, f"  {m['windows']} machine-minutes, {m['alarms']} alarms",
                 "  kind      recall  precision  | rules: recall  precision"]  # fmt: skip
        for kind, s in sorted(m["by_kind"].items()):  # stored as JSONB: key order is lost
            r = m["rules"].get(kind, {})
            ours = f"  {kind:<9} {_n(s['recall']):>6}  {_n(s['precision']):>9}  |"
            lines.append(ours + f"        {_n(r.get('recall')):>6}  {_n(r.get('precision')):>9}")
        return "\n".join(lines)
    w, f, c = m["windows"], m["failures"], m["chance"]
    lines = [
        head,
        f"  minutes:  {w['windows']} ({w['positives']} positive), precision {_n(w['precision'])}"
        f", recall {_n(w['recall'])}, F1 {_n(w['f1'])}, ROC AUC {_n(w['roc_auc'])}",
        "  failures: " + _failures(f) + f" (at random: recall {_n(c['recall'])}, "
        f"precision {_n(c['precision'])})",
    ]
    for label, key in (("runaway rule", "runaway"), ("failure rules", "failure_rules")):
        lines.append(f"  {label + ':':<15}" + _failures(m["baselines"][key]))
    return "\n".join(lines)


def _failures(s: dict[str, Any]) -> str:
    lead, before = s["lead_time_s"], s["before_shutdown_s"]["median"]
    return (
        f"{s['predicted']}/{s['failures']} predicted (recall {_n(s['recall'])}), "
        f"{s['alarms']} alarms (precision {_n(s['precision'])}), lead time median "
        f"{_n(lead['median'])} s (mean {_n(lead['mean'])}), {_n(before)} s before shutdown"
    )


def _list_line(v: dict[str, Any]) -> str:
    m = v["metrics"]
    if v["kind"] == "precursor":
        f = m["failures"]
        score = (f"recall {_n(f['recall'])} precision {_n(f['precision'])} "
                 f"lead {_n(f['lead_time_s']['median'])} s")  # fmt: skip
    else:
        score = f"{m['alarms']} alarms"
    mark = "*" if v["promoted"] else " "
    return (f"{mark} {v['name']:<20} v{v['version']:<4} {v['kind']:<10} "
            f"{','.join(v['runs']):<30} {score}")  # fmt: skip


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
