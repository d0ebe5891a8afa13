"""An independent oracle of the sort decision, for tests only.

Written from docs and the shared specifications, never from the product's source, and
importing nothing from sorter/, drivers/, simulators/ or sorterd/: a parsing or decision
bug in the product must not pass both.
"""

from tests.oracle.codes import Code, Kind, classify, normalise_postcode
from tests.oracle.iso3166 import ISO_ALPHA2, ISO_NUMERIC
from tests.oracle.plan import PlanError
from tests.oracle.reference import Oracle, OracleDecision

__all__ = [
    "ISO_ALPHA2",
    "ISO_NUMERIC",
    "Code",
    "Kind",
    "Oracle",
    "OracleDecision",
    "PlanError",
    "classify",
    "normalise_postcode",
]
