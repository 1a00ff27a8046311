"""`workbench evaluate`: labelled benchmark files through the real pipeline, scored."""

import json
from pathlib import Path

from test_cli import workbench

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NAB = DATA / "nab" / "machine_temperature_system_failure.csv"
SKAB = DATA / "skab" / "other" / "5.csv"
PROFILES = {"standard", "reward_low_FP", "reward_low_FN"}


def test_evaluate_scores_nab_and_skab_files_beside_the_baselines(settings):
    proc = workbench(settings, "evaluate", str(NAB), str(SKAB), "--json", timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    nab, skab = report["files"]
    assert (nab["file"], skab["file"]) == (str(NAB), str(SKAB))
    for entry in (nab, skab, report["pooled"]):
        assert set(entry["nab"]) == PROFILES
        assert all(-1000 <= v <= 100 for v in entry["nab"].values())
        assert set(entry["baselines"]) == {"null", "zscore"}
        # the null detector is NAB's zero by construction
        assert entry["baselines"]["null"]["nab"] == dict.fromkeys(PROFILES, 0.0)
        assert set(entry["baselines"]["zscore"]["nab"]) == PROFILES
    # NAB: its four labelled windows, no per-row labels
    assert nab["windows"] == 4 and nab["rows"] == 22_695 and "f1" not in nab
    assert nab["reconciled"] and nab["deadlettered"] == 0 and nab["alerts"] > 0
    # SKAB: windows after each labelled changepoint, and F1 of the rows flagged
    assert skab["windows"] >= 1 and 0 <= skab["f1"] <= 1
    assert skab["baselines"]["null"]["f1"] == 0.0 and 0 <= skab["baselines"]["zscore"]["f1"] <= 1
    assert 0 <= report["pooled"]["f1"] <= 1
    # the text form: one line per file and the pool
    text = workbench(settings, "evaluate", str(SKAB), timeout=600)
    assert text.returncode == 0 and text.stdout.splitlines()[-1].startswith("pooled")


def test_evaluate_refuses_a_path_that_holds_no_csv_file(settings, tmp_path):
    proc = workbench(settings, "evaluate", str(tmp_path))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "at least one CSV file" in proc.stderr
