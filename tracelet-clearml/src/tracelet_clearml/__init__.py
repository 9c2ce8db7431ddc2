"""Tracelet's ClearML backend: scalars, parameters, tags, console text, images and artifacts."""

__version__ = "0.1.0"
