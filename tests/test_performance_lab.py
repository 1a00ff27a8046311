"""Notebook 07 runs the benchmark headless and records consistent figures; its plots show
what the result holds. No timing is asserted: how fast is for the report, not the test."""

import os

from conftest import run_notebook

from workbench.lab.plots.performance import (
    latency_figure,
    memory_figure,
    stage_table,
    throughput_figure,
)

SECTIONS = {"simulator", "processor", "archive", "sink"}


def test_performance_notebook_runs_headless_and_records_consistent_figures(kernel_env, tmp_path):
    result = run_notebook("07_performance", tmp_path, machines=10, duration_s=10.0, repeats=1,
                          sink_rows=2000, latency_rate=200, latency_s=2.0)  # fmt: skip
    assert set(result["parts"]) == SECTIONS
    stages = result["stages"]
    assert {s["section"] for s in stages} == SECTIONS
    for section in SECTIONS:  # each section: its baseline first, at ratio 1, then its stages
        rows = [s for s in stages if s["section"] == section]
        assert rows[0]["baseline"] and rows[0]["ratio"] == 1.0, section
        assert len(rows) >= 2 and not any(r["baseline"] for r in rows[1:]), section
    assert all(s["ratio"] > 0 and s["per_s"] > 0 and s["count"] > 0 for s in stages)
    # 10 machines x 10 s: 3 sensors every second and the battery every tenth, per machine
    counts = {
        s["count"]
        for s in stages
        if s["section"] in ("simulator", "processor") and "chaos" not in s["stage"]
    }
    assert counts == {10 * (4 * 10 + 1)}
    assert result["processor_ratio"] > 0 and result["raw_eps"] > 0 and result["processor_eps"] > 0
    assert result["processor_eps"] == next(
        s["per_s"] for s in stages if s["stage"] == "processor into PostgreSQL"
    )
    lat = result["latency_ms"]
    assert lat["samples"] > 0 and lat["rate_per_s"] == 200
    assert 0 <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert result["peak_rss_mb"] >= result["rss_before_mb"] > 0
    assert result["machine"]["cores"] == os.cpu_count()
    assert result["sink_bulk_ratio"] > 0 and result["compression_ratio"] > 0


def test_performance_figures_show_every_stage_percentile_and_memory_mark():
    row = {"events": 100, "seconds": 0.1}
    result = {
        "simulator": {"rows": [{**row, "name": "baseline: produce", "events_per_s": 1000,
                                "ratio": 1.0},
                               {**row, "name": "simulator + produce", "events_per_s": 800,
                                "ratio": 0.8}]},
        "sink": {"rows": [{"name": "baseline: executemany", "rows": 50, "seconds": 0.5,
                           "rows_per_s": 100, "ratio": 1.0},
                          {"name": "bulk", "rows": 50, "seconds": 0.1, "rows_per_s": 500,
                           "ratio": 5.0}]},
    }  # fmt: skip
    table = stage_table(result)
    assert list(table["section"]) == ["simulator", "simulator", "sink", "sink"]
    assert list(table["per_s"]) == [1000, 800, 100, 500]
    assert list(table["unit"]) == ["readings", "readings", "rows", "rows"]

    fig = throughput_figure(result)
    # per section: absolute rates (left) and ratios (right)
    assert [(t.name, t.xaxis) for t in fig.data] == [
        ("simulator", "x"), ("simulator", "x2"), ("sink", "x"), ("sink", "x2")
    ]  # fmt: skip
    assert list(fig.data[1].x) == [1.0, 0.8] and list(fig.data[3].x) == [1.0, 5.0]
    assert list(fig.data[2].y) == ["sink: baseline: executemany", "sink: bulk"]
    assert fig.layout.xaxis.type == "log"

    lat = latency_figure({"p50": 5.0, "p90": 9.0, "p99": 30.0, "max": None, "samples": 3})
    assert list(lat.data[0].x) == ["p50", "p90", "p99"]  # a missing percentile is left out

    mem = memory_figure(250.0, before_mb=120.0, memory_gib=8.0)
    assert list(mem.data[0].y) == [120.0, 250.0]
    assert mem.layout.shapes[0].y0 == 8.0 * 1024  # the machine's memory, for scale
