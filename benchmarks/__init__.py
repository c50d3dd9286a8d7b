"""Speed targets for mimir-edge, each measured against a baseline in the same run.

A package (not a loose directory) so that mypy and pytest tell ``benchmarks/conftest.py``
apart from ``tests/conftest.py``.
"""
