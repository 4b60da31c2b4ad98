"""The local stack of ``connectome-sse up``: settings, Redis, supervised children, banner."""
