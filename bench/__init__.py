"""Benchmarks behind ``fogmesh bench``: each prints a table and takes --json."""
