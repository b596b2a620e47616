"""wanwitness: an independent witness for a home internet line."""

# The version lives beside the agent (wanwitness/agent/version.py), so the board's `fw`
# field and the collector's version cannot drift apart.
from wanwitness.agent.version import VERSION as __version__

__all__ = ["__version__"]
