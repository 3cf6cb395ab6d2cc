"""Node fleet simulator: realistic hourly rollups (contract §1), cache events (§2), faults,
and the exact expected usage (§4) to compare the pipeline against.

    sim = Simulator(FleetSpec(nodes=10, accounts=50, seed=7), FaultSpec.default())
    day = sim.generate_day(date(2026, 10, 5))
    sim.upload(day.files, s3, bucket, prefix)            # on-time files, in order
    truth = day.expected_usage_daily()                    # what usage_daily must hold
"""

from usage_etl.simulator.core import Simulator, StreamResult, Unit, date_range
from usage_etl.simulator.fleet import Fleet, Node
from usage_etl.simulator.model import SimDay, SimFile
from usage_etl.simulator.spec import (
    DEFAULT_BAD_ROW_RULES,
    STRAY_KINDS,
    SUPPORTED_BAD_ROW_RULES,
    Fault,
    FaultSpec,
    FleetSpec,
)

__all__ = [
    "DEFAULT_BAD_ROW_RULES",
    "STRAY_KINDS",
    "SUPPORTED_BAD_ROW_RULES",
    "Fault",
    "FaultSpec",
    "Fleet",
    "FleetSpec",
    "Node",
    "SimDay",
    "SimFile",
    "Simulator",
    "StreamResult",
    "Unit",
    "date_range",
]
