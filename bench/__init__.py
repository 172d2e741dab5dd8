"""Benchmarks for Hookbin (see BENCHMARKS.md). Not part of the installed package."""
