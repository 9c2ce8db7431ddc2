"""Tracelet's Weights & Biases backend: metrics, params, tags, texts, images and artifacts."""

__version__ = "0.1.0"
