"""health-publisher: turns connectome signals into connectome_health events."""
