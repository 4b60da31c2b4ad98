"""``connectome-sse chaos``: faults injected into a local topology of real processes.

``topology`` starts Redis, two publishers, two gateways and the project's
nginx on loopback (and the same on Redis Sentinel for the scenarios that
need it); ``feed`` publishes numbered events and watches the health
channel; ``figures`` turns what the clients received into the numbers a user
would notice; ``scenarios`` holds each fault next to the limit it is held to;
``runner`` plays them; ``report`` prints the table and writes the JSON.
"""
