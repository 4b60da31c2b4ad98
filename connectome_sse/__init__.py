"""connectome-sse: the shared wire contract, plumbing used by both processes, and the CLI."""
