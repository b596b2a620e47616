"""The virtual board: the agent on the MicroPython unix port, standing in for an ESP32.

`supervisor` is its power supply and reset line (one boot = one micropython process);
`serial_line` puts it behind a pty like a USB-serial bridge. The MicroPython side (the
fake ADC, Wi-Fi radio, watchdog and flash) is package data in
`wanwitness/firmware/boards/virtual/`.
"""
