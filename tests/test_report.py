"""`workbench report`: notebooks run headless into reports, with HTML, an index, clear
failures, and a machine-readable list of notebooks and parameters."""

from __future__ import annotations

import json
import logging
import subprocess
from functools import partial

import nbformat
from conftest import WORKBENCH, cli_env

from workbench.cli import main
from workbench.lab.report import coerce


def report(settings, *args, timeout=300):
    return subprocess.run([WORKBENCH, "report", *args], env=cli_env(settings),
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def test_list_json_names_every_notebook_with_its_parameters_and_defaults(settings):
    proc = report(settings, "--list", "--json")
    assert proc.returncode == 0, proc.stderr
    notebooks = {nb["name"]: nb for nb in json.loads(proc.stdout)["notebooks"]}
    quick = notebooks["01_quickstart"]["parameters"]
    assert quick["machines"]["default"] == 5 and quick["seed"]["default"] == 0
    assert quick["machines"]["help"]


def test_a_report_writes_the_notebook_its_html_and_the_index(settings, tmp_path):
    proc = report(settings, "quickstart", "-p", "machines", "2", "-p", "duration_s", "5",
                  "--out", str(tmp_path), "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    done = json.loads(proc.stdout)
    executed, page = tmp_path.joinpath(done["executed"]), tmp_path.joinpath(done["html"])
    assert executed.is_file() and page.is_file()
    assert executed.name.startswith("01_quickstart-") and executed.parent.parent == tmp_path
    # the report, its files and the rows in the database carry the run's one id
    assert done["run_id"] == done["recorded"]["run_id"] and done["run_id"] in page.name
    assert done["parameters"] == {"machines": 2, "duration_s": 5}
    assert done["recorded"]["produced"] == done["recorded"]["stored"] > 0
    assert json.loads(tmp_path.joinpath(done["results"]).read_text())["results"] == done["recorded"]
    text = page.read_text()
    assert "run_experiment(" not in text  # code hidden by default
    # the figure is drawn in the page by the folder's one copy of plotly.js, loaded by a
    # relative path (the page opens offline, wherever the folder is copied)
    (shared,) = tmp_path.glob("plotly-*.min.js")
    assert f'<script src="../{shared.name}"' in text and "Plotly.newPlot(" in text
    assert "window.PlotlyConfig" not in text and shared.stat().st_size > 3_000_000
    assert page.stat().st_size < 1_000_000 and executed.stat().st_size < 1_000_000
    assert "Kernel is running over TCP" not in proc.stderr
    index = (tmp_path / "index.html").read_text()
    assert done["html"].split("/")[-1] in index and "completed" in index


def tiny_notebook(path, parameters: str, *cells: str):
    """A notebook at ``path``: a ``parameters`` cell, then ``cells``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}  # fmt: skip
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *(nbformat.v4.new_code_cell(c) for c in cells)]
    nbformat.write(nb, path)
    return path


def test_a_failing_notebook_exits_non_zero_naming_the_cell(settings, tmp_path):
    path = tiny_notebook(tmp_path / "broken.ipynb", "size = 3", "x = size * 2",
                         "raise ValueError(f'boom {x}')")  # fmt: skip
    proc = report(settings, str(path), "-p", "size", "4", "--out", str(tmp_path / "out"))
    assert proc.returncode == 1
    error = [line for line in proc.stderr.splitlines() if line.startswith("workbench: error:")]
    assert len(error) == 1 and "failed in cell 3" in error[0] and "ValueError: boom 8" in error[0]
    assert list((tmp_path / "out").glob("*/broken-*.ipynb"))  # kept for its traceback
    (results,) = (tmp_path / "out").glob("*/broken-*.json")
    assert json.loads(results.read_text())["status"] == "failed"


def test_bad_names_and_values_are_one_line_each(settings, capsys, request):
    # main() sets the workbench logger's level; give it back to the tests that follow
    package_logger = logging.getLogger("workbench")
    request.addfinalizer(partial(package_logger.setLevel, package_logger.level))
    proc = report(settings, "nope")  # the real command: exit code 1, one line
    assert proc.returncode == 1 and "notebook='nope'" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for args, complaint in (  # the same path in this process: seconds less each
        (("quickstart", "-p", "machinez", "2"), "parameters of 01_quickstart"),
        (("quickstart", "-p", "machines", "many"), "a whole number"),
        ((), "a notebook NAME, --all, --list or --history"),
        (("--all", "--notebooks", "/nonexistent"), "a folder of .ipynb files"),
    ):
        assert main(["report", *args]) == 1, args
        err = capsys.readouterr().err
        assert complaint in err and len(err.strip().splitlines()) == 1, (args, err)


def test_documented_ranges_are_listed_and_a_value_outside_is_refused_before_running(
    settings, tmp_path
):
    nb = tiny_notebook(
        tmp_path / "ranged.ipynb",
        'n = 3  # how many [1 .. 10]\nmode = "a"  # how [a | b]\nx = 0.5  # free',
        "from workbench.lab import record\nrecord('n', n)",
    )
    listed = report(settings, "--list", "--json", "--notebooks", str(tmp_path))
    (found,) = json.loads(listed.stdout)["notebooks"]
    assert found["parameters"]["n"] == {"default": 3, "help": "how many", "range": [1, 10],
                                        "choices": None}  # fmt: skip
    assert found["parameters"]["mode"]["choices"] == ["a", "b"]
    assert found["parameters"]["x"]["range"] is None
    for args, complaint in ((("-p", "n", "11"), "a number from 1 to 10"),
                            (("-p", "mode", "c"), "one of: a, b")):  # fmt: skip
        proc = report(settings, str(nb), *args, "--out", str(tmp_path / "out"))
        assert proc.returncode == 1 and complaint in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "out").exists()  # refused before anything ran
    ok = report(
        settings, str(nb), "-p", "n", "10", "-p", "mode", "b", "--out", str(tmp_path / "out")
    )
    assert ok.returncode == 0, ok.stderr


def test_the_index_shows_each_reports_status_and_flags_a_regression_across_runs(settings, tmp_path):
    """Three runs of one notebook with the same parameters: the third's recall fell, and a
    fourth run with other parameters fails; the index says both, and nothing else."""
    figures = tmp_path / "figures.json"
    nb = tiny_notebook(
        tmp_path / "detector.ipynb",
        f"source = {str(figures)!r}  # where the figures come from\nfail = False",
        "import json\nfrom workbench.lab import record\nfigures = json.load(open(source))\n"
        "assert not fail, 'asked to fail'\n"
        "record('run_id', figures.pop('run_id'))\n"
        "for k, v in figures.items(): record(k, v)",
    )
    out = tmp_path / "reports"
    runs = [("r1", 0.9, 2), ("r2", 0.9, 2), ("r3", 0.6, 2)]
    for run_id, recall, produced in runs:
        figures.write_text(json.dumps({"run_id": run_id, "score": {"spike": {"recall": recall}},
                                       "faults_missed": 1, "produced": produced}))  # fmt: skip
        proc = report(settings, str(nb), "--out", str(out), "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["run_id"] == run_id
    failed = report(settings, str(nb), "-p", "fail", "true", "--out", str(out))
    assert failed.returncode == 1
    from workbench.lab.history import REPORT_SECONDS, load, series

    (latest, other) = sorted(series(load(out)), key=lambda s: len(s.entries), reverse=True)
    assert [e.run_id for e in latest.entries] == ["r1", "r2", "r3"]
    # (how long a report took is a figure too, but a timing one: not asserted here)
    regressed = [(c.name, c.baseline, c.latest) for c in latest.regressions()]
    assert [r for r in regressed if r[0] != REPORT_SECONDS] == [("score.spike.recall", 0.9, 0.6)]
    verdicts = {c.name: c.verdict for c in latest.changes}
    assert verdicts["faults_missed"] == verdicts["produced"] == "steady"
    assert [e.status for e in other.entries] == ["failed"] and other.changed == {"fail": True}
    index = (out / "index.html").read_text()
    needs_look = index.split("<h2>Trends</h2>")[0]
    assert "AssertionError" in needs_look and "score.spike.recall" in needs_look
    assert "score.spike.recall 0.9 &rarr; 0.6" in needs_look
    assert "AssertionError: asked to fail" in needs_look
    for run_id, *_ in runs:
        assert f"detector-{run_id}.html" in index
    # the same, for a scheduler: exit 1, and what regressed
    told = report(settings, "--history", "--json", "--out", str(out))
    assert told.returncode == 1, told.stderr
    by_params = {json.dumps(s["parameters"]): s for s in json.loads(told.stdout)["series"]}
    assert by_params['{"fail": true}']["latest"]["status"] == "failed"
    changes = by_params["{}"]["changes"]
    assert [(c["name"], c["verdict"]) for c in changes if c["name"] != REPORT_SECONDS] == [
        ("score.spike.recall", "regression")
    ]


def test_values_take_the_type_of_the_default():
    assert coerce("n", "12", 5) == 12 and coerce("r", "2", 1.0) == 2.0
    assert coerce("b", "off", True) is False and coerce("s", "x", "y") == "x"


def test_all_runs_every_notebook_with_its_defaults_and_keeps_what_each_recorded(settings, tmp_path):
    own = tmp_path / "notebooks"
    own.mkdir()
    record = "from workbench.lab import record\n"
    tiny_notebook(own / "a_square.ipynb", "n = 3", record + "record('square', n * n)")
    tiny_notebook(own / "b_hello.ipynb", "who = 'lab'  # whom to greet",
                  record + "record('greeting', f'hello {who}')")  # fmt: skip
    listed = report(settings, "--list", "--json", "--notebooks", str(own))
    assert [nb["name"] for nb in json.loads(listed.stdout)["notebooks"]] == ["a_square", "b_hello"]
    proc = report(settings, "--all", "--notebooks", str(own), "--out", str(tmp_path / "r"),
                  "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    reports = json.loads(proc.stdout)["reports"]
    assert [(r["notebook"], r["parameters"], r["recorded"]) for r in reports] == [
        ("a_square", {}, {"square": 9}),
        ("b_hello", {}, {"greeting": "hello lab"}),
    ]
    for r in reports:  # the recorded results beside each report, for schedulers and diffs
        saved = json.loads((tmp_path / "r" / r["results"]).read_text())
        assert saved["status"] == "completed" and saved["results"] == r["recorded"]
