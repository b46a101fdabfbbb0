"""Benchmarks of the per-invocation runtime against the persistent-connection baseline (scripts, not tests)."""
