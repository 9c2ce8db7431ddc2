"""Tracelet's Aim backend: metrics, parameters, tags, texts, images, histograms and artifacts."""

__version__ = "0.1.0"
