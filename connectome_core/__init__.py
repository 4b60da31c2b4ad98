"""The core both services stand on: the wire contract, settings, Redis connections, logs."""
