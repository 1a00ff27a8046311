"""Online statistics per key, compiled: River's estimators lifted to arrays.

One estimator per module, each River's ``update``/``get`` protocol as kernels on per-key
state arrays (row ``k`` is key ``k``), equal to River's results bit for bit:

* :mod:`.var`: ``river.stats.Var`` and the ``Mean`` it carries;
* :mod:`.ewm`: ``river.stats.EWMean`` and ``EWVar``;
* :mod:`.quantile`: ``river.stats.Quantile`` (P²);
* :mod:`.pagehinkley`: ``river.drift.PageHinkley``;
* :mod:`.sensor`: all of them fused with the robust baseline into the legacy
  ``SensorStats``, for every key of a batch in one compiled pass.
"""

from workbench.processor.stats.ewm import (
    EWMEAN_FIELDS,
    EWVAR_FIELDS,
    ew_batch,
    ewmean_get,
    ewmean_update,
    ewvar_get,
    ewvar_update,
)
from workbench.processor.stats.pagehinkley import (
    PH_ALPHA,
    PH_FIELDS,
    ph_batch,
    ph_reset,
    ph_update,
)
from workbench.processor.stats.quantile import (
    quantile_batch,
    quantile_fields,
    quantile_get,
    quantile_increments,
    quantile_update,
)
from workbench.processor.stats.sensor import (
    FORMAT_VERSION,
    NO_TS,
    FeatureColumns,
    SensorStatsState,
    update,
)
from workbench.processor.stats.var import VAR_FIELDS, var_batch, var_get, var_update

__all__ = [
    "EWMEAN_FIELDS",
    "EWVAR_FIELDS",
    "FORMAT_VERSION",
    "NO_TS",
    "PH_ALPHA",
    "PH_FIELDS",
    "VAR_FIELDS",
    "FeatureColumns",
    "SensorStatsState",
    "ew_batch",
    "ewmean_get",
    "ewmean_update",
    "ewvar_get",
    "ewvar_update",
    "ph_batch",
    "ph_reset",
    "ph_update",
    "quantile_batch",
    "quantile_fields",
    "quantile_get",
    "quantile_increments",
    "quantile_update",
    "update",
    "var_batch",
    "var_get",
    "var_update",
]
