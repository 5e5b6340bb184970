"""`earshot serve`: the web page and HTTP API over a catalogue (`create_app`)."""

from earshot.serve.app import Settings, create_app

__all__ = ["Settings", "create_app"]
