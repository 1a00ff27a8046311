"""Notebooks run headless, top to bottom, against the real stack, and say what they found."""

import json
from pathlib import Path

import nbformat
import papermill
import pytest
from conftest import cli_env, readings_in

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def result_of(executed: Path) -> dict:
    """The JSON after 'RESULT ' that a notebook prints as its machine-readable outcome."""
    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            for line in output.get("text", "").splitlines():
                if line.startswith("RESULT "):
                    return json.loads(line[len("RESULT ") :])
    raise AssertionError(f"{executed} printed no RESULT line")


@pytest.fixture
def kernel_env(settings, monkeypatch):
    """The kernel papermill starts inherits this process's environment."""
    for key, value in cli_env(settings).items():
        monkeypatch.setenv(key, value)


def test_every_notebook_is_committed_without_outputs():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"


def test_quickstart_runs_headless_and_reads_back_what_it_stored(kernel_env, tmp_path):
    out = tmp_path / "quickstart.ipynb"
    papermill.execute_notebook(
        NOTEBOOKS / "01_quickstart.ipynb",
        out,
        parameters={"machines": 2, "duration_s": 5, "seed": 3},
        progress_bar=False,
        cwd=str(NOTEBOOKS),
    )
    result = result_of(out)
    n = readings_in(2, 5)
    assert result["produced"] == result["stored"] == result["rows_read_back"] == n
