"""The four example systems written by hand with ``multiprocessing``, as the seed write-ups did,
for `benchmarks/examples_vs_multiprocessing.py` to time and count against ``examples/``."""
