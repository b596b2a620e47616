"""wanwitness: an independent witness for a home internet line."""

__version__ = "0.1.0"
