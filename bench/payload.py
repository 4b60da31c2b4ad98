"""The measured event's payload: who sent it (run id), its sequence number and send time.

The publisher stamps `sent` (Unix seconds, microseconds) just before handing
the event to Redis or Nchan; the client subtracts it from the receive time.
Bodies are padded to an exact size so every system moves the same bytes.
"""

from __future__ import annotations

import json


def make_payload(run: str, seq: int, sent: float, size: int) -> bytes:
    """JSON `{"run", "seq", "sent", "pad"}` of exactly `size` bytes (or the minimum, if larger)."""
    head = f'{{"run":"{run}","seq":{seq},"sent":{sent:.6f},"pad":"'
    tail = '"}'
    pad = max(0, size - len(head) - len(tail))
    return (head + "x" * pad + tail).encode()


def read_payload(data: str, run: str) -> tuple[int, float] | None:
    """(seq, sent) of a payload of run `run`; None for anything else."""
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("run") != run:
        return None
    seq, sent = obj.get("seq"), obj.get("sent")
    if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(sent, int | float):
        return None
    return seq, float(sent)
