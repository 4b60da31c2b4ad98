"""sse-gateway: relays Redis pub/sub events to browsers as Server-Sent Events."""
