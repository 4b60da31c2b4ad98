"""The project's own fan-out benchmark (not part of the product; not installed with it).

`python3 -m bench` starts Redis, each system under test and the reference
systems (Nchan, a naive one-subscription-per-client app) in turn, drives them
with the load client in `bench.client`, and prints one markdown table.
See `python3 -m bench -h` and docs/performance.md.
"""
