"""Benchmarks: structpred against its peer on the same inputs, in the same run.

Timing never goes in a test; these are run by ``structpred bench <name>`` and
``benchmarks/<name>.py``, and their tables go in the README.
"""
