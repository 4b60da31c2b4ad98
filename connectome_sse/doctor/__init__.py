"""``connectome-sse doctor``: check an SSE endpoint as a browser sees it through every proxy.

``observe`` records one probe stream (``GET /api/sse?probe=1``), ``checks``
judges the recording, ``report`` prints the verdicts. The command itself is
``connectome_sse.commands.doctor``.
"""
