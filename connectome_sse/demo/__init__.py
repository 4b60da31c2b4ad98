"""The simulated connectome engine behind ``connectome-sse demo-engine``."""
