"""Benchmarks: each figure printed with a baseline measured in the same run."""
