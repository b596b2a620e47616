# The one version string of wanwitness: the agent's `fw` field in its boot record,
# `wanwitness --version`, the distribution's version (pyproject.toml reads it here) and
# the deploy manifest on the board all come from this line.
VERSION = "0.1.0"
