"""Serial gauges (RS-232/USB): readers and pure line parsers. Arrives with the serial-gauge issue."""
