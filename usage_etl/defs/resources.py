"""Resources bound to every asset, check, sensor and schedule of the code location."""

import dagster as dg

from usage_etl.resources import default_resources


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=default_resources())
