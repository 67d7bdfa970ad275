"""User-facing errors: a one-line message, exit code 2 at the CLI."""

from __future__ import annotations


class StreamerError(Exception):
    """An error caused by bad input (file, option, model); its message is shown to the user as is."""


class ModelFileError(StreamerError):
    """A model file is missing, truncated, foreign or corrupt."""


class AudioFileError(StreamerError):
    """An audio file cannot be read."""
