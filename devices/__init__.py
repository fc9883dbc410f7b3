"""Serial gauges (RS-232/USB): readers and pure line parsers, to come."""
