"""Test dummies built from production code, for tests and benchmarks.

Synthetic audio and broken files, tiny models, PANNs-layout checkpoints, labelled datasets,
clustered unit vectors; a small indexed library and a server thread for `earshot serve`.
"""
