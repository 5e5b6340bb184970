"""Data: datasets, recipes, splits, caption mining and feature caches.

Both `earshot.train` and `earshot.eval` import this layer; neither imports the other's data
code, and `earshot.eval` does not import `earshot.train` at all.
"""
