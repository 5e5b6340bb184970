"""The search index: the SQLite catalogue (source of truth) and the ANN cache built from it."""
