"""station-bridge: an MQTT edge bridge between factory test stations and the MES."""
