"""Load generation, scenarios and reports that measure the Flash engines against each other."""
