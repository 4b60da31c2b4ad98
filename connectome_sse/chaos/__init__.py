"""``connectome-sse chaos``: faults injected into a local topology of real processes.

``topology`` builds it, ``feed`` publishes numbered events and watches health,
``scenarios`` holds each fault with its limit, ``runner`` plays them,
``figures`` measures what clients got, ``report`` prints the table.
"""
