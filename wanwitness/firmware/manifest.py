# Freeze manifest: MicroPython for the ESP32 with the wanwitness agent built in.
#
# Frozen modules run from flash as bytecode: no compile on the board, almost no heap for
# code, and a `wanwitness deploy` of config.json is all a board needs. Prefer this build
# on a classic ESP32. With the stock MicroPython image deploy copies the agent's .mpy
# files and they load into RAM: measured on a 32-bit unix build of MicroPython 1.28
# (bench/agent_heap.py --mp32-mpy, bench/README.md) the agent's imports then leave ~59 KB
# on the heap and the scripted run needs a 128K heap (112K ran out after 42 s): at the
# ceiling of a classic ESP32 without PSRAM. The same agent frozen in (--mp32) leaves
# ~12 KB after its imports; bench/README.md has its heap figures.
#
# Build (Linux or macOS; the ESP-IDF takes ~2 GB and one long download):
#
#   git clone --depth 1 --branch v1.26.1 https://github.com/micropython/micropython.git
#   cd micropython
#   make -C mpy-cross
#   # The ESP-IDF release that ports/esp32/README.md names for this tag, e.g. v5.4.2:
#   git clone --depth 1 --branch v5.4.2 --recursive https://github.com/espressif/esp-idf.git ~/esp-idf
#   ~/esp-idf/install.sh esp32,esp32c3,esp32s3
#   . ~/esp-idf/export.sh
#   cd ports/esp32
#   make BOARD=ESP32_GENERIC submodules
#   make BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/wanwitness/firmware/manifest.py
#
# BOARD is the profile's `micropython_board` (ESP32_GENERIC, ESP32_GENERIC_C3,
# ESP32_GENERIC_S3: `wanwitness boards` lists them); FROZEN_MANIFEST must be an absolute
# path. The image is build-BOARD/firmware.bin, bootloader and partition table included:
#
#   wanwitness flash --port /dev/ttyUSB0 --board esp32-devkitc \
#       --firmware build-ESP32_GENERIC/firmware.bin
#
# Relative paths below are relative to this file (MicroPython tools/manifestfile.py
# runs a manifest in its own directory).

# The port's own frozen modules: _boot.py (mounts the filesystem), inisetup, neopixel, ...
include("$(PORT_DIR)/boards/manifest.py")

# boot.py: a frozen boot.py runs instead of one on the filesystem
# (shared/runtime/pyexec.c, pyexec_file_if_exists looks in the frozen modules first).
module("boot.py", base_path=".")

# The agent: every module of agent/ except main.py. main.py stays a file on the board so
# that a user can read it and replace it (e.g. with an empty one, to get a quiet REPL).
# sys.path on the esp32 port is ['', '.frozen', '/lib']: an .mpy that deploy copies onto
# the filesystem shadows the frozen one, so an agent update needs no new firmware.
# A new module in agent/ must be added here: tests/test_boards.py fails until it is.
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
