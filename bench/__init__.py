"""Benchmarks: each prints ratios measured within one run (machines are shared and noisy)."""
