"""earshot: search recordings by describing what you hear.

Importing the package does nothing heavy: torch and the models load only when used.
"""

from earshot.errors import AudioDecodeError, EarshotError, ModelLoadError

__version__ = "0.1.0"

__all__ = ["AudioDecodeError", "EarshotError", "Index", "ModelLoadError", "__version__"]


def __getattr__(name: str):
    # `earshot.Index` without importing torch, faiss and sqlite at `import earshot`.
    if name == "Index":
        from earshot.api import Index

        return Index
    raise AttributeError(f"module 'earshot' has no attribute {name!r}")
