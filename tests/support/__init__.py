"""Helpers the test layers share: real processes on free loopback ports, and deadline waits."""
