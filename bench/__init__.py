"""Benchmarks of issue 3 (not part of the test suite). Run them all with ``bench/run``."""
