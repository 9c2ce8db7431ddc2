"""Compiles log_metric's hot path; everything else about tracelet-core is in pyproject.toml.

The extension is optional: where it cannot be built (no C compiler), the install goes on
and ``Experiment`` uses the pure-Python ``log_metric``, which does the same, slower.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("tracelet.core._hotpath", ["src/tracelet/core/_hotpath.c"], optional=True)
    ]
)
