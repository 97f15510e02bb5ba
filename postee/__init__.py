"""Postee in Python: a security-event router and response system built on Trio actors."""

__version__ = "0.1.0"
