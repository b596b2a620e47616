"""Board tooling: everything between the host and an ESP32 (or the virtual board).

`profiles` (which chip, which pins), `flash` (MicroPython onto the chip, serial ports),
`build` (the agent compiled with mpy-cross), `link` (a raw-REPL link over serial),
`deploy` (the agent and its config onto the board), `calibrate` (LED levels).
"""
