"""One module per ``connectome-sse`` subcommand (see ``connectome_sse.cli``)."""
