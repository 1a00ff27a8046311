"""Online models learnt from the chaos ground truth, and the registry that keeps them.

Trained over stored runs: each machine's final one-minute windows become one feature
vector per minute (:mod:`.features`, made by the processor's own code,
:mod:`workbench.processor.predict`, which scores them with the promoted version); a River
classifier learns whether a ``failure`` is under way or starts within the next H minutes
(:mod:`.precursor`), a Half-Space Trees detector scores how unusual each minute is
(:mod:`.anomaly`); both are judged against the ground truth and beside the alert rules
(:mod:`.evaluate`), trained and stored as numbered versions in the database
(:mod:`.registry`, :mod:`.train`), and driven by ``workbench model`` (:mod:`.command`).

Importing this package loads neither River nor pandas: the command line imports it to
build its parser.
"""

from __future__ import annotations

__all__ = ["ModelError", "NotFound"]

from workbench.errors import WorkbenchError


class ModelError(WorkbenchError):
    """A model cannot be trained, stored, loaded or evaluated as asked: an unknown version,
    a run without the windows or ground truth it needs, a model saved by another River."""


class NotFound(ModelError):
    """A run, machine or model version that the database does not have (HTTP 404)."""
