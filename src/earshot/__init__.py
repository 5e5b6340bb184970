"""earshot: search recordings by describing what you hear.

Importing the package does nothing heavy: torch and the models load only when used.
"""

from earshot.errors import AudioDecodeError, EarshotError, ModelLoadError

__version__ = "0.1.0"

__all__ = ["AudioDecodeError", "EarshotError", "ModelLoadError", "__version__"]
