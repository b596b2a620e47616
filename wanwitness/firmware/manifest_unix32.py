# Freeze manifest of the 32-bit unix MicroPython that the tests and bench/agent_heap.py
# run the agent on (`./dev mp32`, testing/mp32.py): the board's firmware as far as a PC
# can have it. Frozen modules run from the binary as bytecode, as from an ESP32's flash,
# so the heap figures measured on it are about the agent's data, not its code.
# The paths are relative to this file (MicroPython's tools/manifestfile.py runs a
# manifest in its own directory). The frozen modules are on sys.path as ".frozen".

# asyncio, as the esp32 port freezes it (the unix standard variant would take it from
# micropython-lib, which the vendored source leaves out).
include("$(MPY_DIR)/extmod/asyncio")

# The agent: every module of agent/ except main.py, as firmware/manifest.py (main.py
# stays a file that the virtual board runs by name). Each imports under its own name.
module("app.py", base_path="../agent")
module("clock.py", base_path="../agent")
module("config.py", base_path="../agent")
module("detector.py", base_path="../agent")
module("led.py", base_path="../agent")
module("mqtt.py", base_path="../agent")
module("net.py", base_path="../agent")
module("outbox.py", base_path="../agent")
module("probe.py", base_path="../agent")
module("version.py", base_path="../agent")

# The virtual board's stand-ins for the ESP32's C modules (run.py stays a file: it is
# the script the board boots with).
module("board.py", base_path="boards/virtual")
module("flash.py", base_path="boards/virtual")
module("lwipsocket.py", base_path="boards/virtual")
module("machine.py", base_path="boards/virtual")
module("network.py", base_path="boards/virtual")
module("vticks.py", base_path="boards/virtual")
