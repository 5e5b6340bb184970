"""earshot: search recordings by describing what you hear.

Importing the package does nothing heavy: torch and the models load only when used.
"""

from earshot.errors import AudioDecodeError, EarshotError, ModelLoadError

# The one place the version is written: pyproject.toml reads it from here.
__version__ = "0.1.0"

# Imported on first use (module __getattr__), so that `import earshot` stays light: name ->
# the module that defines it.
_LAZY = {
    "Index": "earshot.api",
    "choose_model": "earshot.api",
    "load_model": "earshot.model.io",
    "embed_file": "earshot.embed",
    "Hit": "earshot.hits",
    "Filters": "earshot.filters",
}

__all__ = ["AudioDecodeError", "EarshotError", "ModelLoadError", "__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'earshot' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
