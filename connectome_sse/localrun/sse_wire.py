"""Reading SSE bytes the way the WHATWG spec does, for assertions on exact framing.

Lines end at CRLF, LF or CR (and only those: a parser that also splits on
U+2028 and friends, as ``str.splitlines`` does, is not conformant). Field
handling is ``connectome_sse.sse_client.EventStreamParser``.
"""

from __future__ import annotations

import re

from connectome_sse.sse_client import EventStreamParser, ServerEvent

_LINE_END = re.compile(r"\r\n|\r|\n")


def spec_lines(text: str) -> list[str]:
    """Complete lines of ``text``; a trailing unterminated line is left out."""
    parts = _LINE_END.split(text)
    return parts[:-1]


def parse_stream(raw: bytes) -> tuple[list[ServerEvent], EventStreamParser]:
    parser = EventStreamParser()
    events = []
    for line in spec_lines(raw.decode("utf-8")):
        event = parser.feed(line)
        if event is not None:
            events.append(event)
    return events, parser
