"""Helpers for tests and benchmarks: synthetic audio and broken files, written on demand."""
