# boot.py: runs first on every boot of a real board, before main.py.
# Keep it minimal: anything that fails here happens before the agent can report it.
import gc

gc.collect()
