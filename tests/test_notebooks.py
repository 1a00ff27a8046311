"""Notebooks run headless, top to bottom, against the real stack, and say what they found."""

import nbformat
from conftest import NOTEBOOKS, readings_in, run_notebook


def test_every_notebook_is_committed_without_outputs():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"


def test_quickstart_runs_headless_and_reads_back_what_it_stored(kernel_env, tmp_path):
    result = run_notebook("01_quickstart", tmp_path, machines=2, duration_s=5, seed=3)
    n = readings_in(2, 5)
    assert result["produced"] == result["stored"] == result["rows_read_back"] == n
    # one 60 s and one 300 s window per machine and sensor (5 sensors)
    assert result["windows_final"] == 2 * 5 * 2
