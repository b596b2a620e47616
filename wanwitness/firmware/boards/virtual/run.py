# Boot of the virtual board: what the ESP32's ROM, _boot.py and the REPL do around
# main.py. Run as `micropython firmware/boards/virtual/run.py` with MICROPYPATH =
# agent:firmware/boards/virtual (wanwitness/virtual.py sets it up, README.md).
#   1. board: reset cause and RTC from the state file (imported first: paths resolve
#      against the start directory before the flash is mounted)
#   2. mount the flash image (flash.py) at /flash and chdir into it
#   3. copy the agent's config.json in when it differs
#   4. import main; afterwards behave like the REPL: a running watchdog resets the board
# On a serial line (WANWITNESS_VBOARD_SERIAL=1, `micropython -i`, see wanwitness/vserial.py)
# the board holds its own software, as a flashed ESP32 does: boot.py and main.py and the
# modules they import come from the flash, nothing from the host's agent/ folder; Ctrl-C
# interrupts main.py and the REPL follows (raw REPL for mpremote).
import gc
import os
import sys
import time

import board
import machine
gc.collect()
import vticks  # noqa: E402

vticks.install()  # noqa: E305 - asyncio wakes on 10 ms FreeRTOS ticks (vticks.py): before anything imports it

gc.collect()  # compiled from source here: room for the parser in a small heap
import lwipsocket  # noqa: E402

# `socket` as the esp32 port's lwIP gives it (lwipsocket.py), for everything imported after
lwipsocket.install()

FLASH = os.getenv("WANWITNESS_VBOARD_FLASH")
CONFIG = os.getenv("WANWITNESS_VBOARD_CONFIG")
SERIAL = os.getenv("WANWITNESS_VBOARD_SERIAL")


def _copy_config(path):
    with open(path, "rb") as f:
        new = f.read()
    try:
        with open("config.json", "rb") as f:
            if f.read() == new:
                return
    except OSError:
        pass
    with open("config.json.tmp", "wb") as f:
        f.write(new)
    os.rename("config.json.tmp", "config.json")
    print("virtual board: config.json written to the flash")


def _idle(why):
    # The REPL does not feed the watchdog: a running one resets the board, as on an ESP32
    if machine.wdt_running():
        print("virtual board: %s; the watchdog will reset the board" % why)
        while True:
            time.sleep(1)


if FLASH:
    try:
        import flash

        flash.mount(FLASH)  # littlefs on the image file, and chdir into /flash
    except Exception as e:
        print("virtual board: %s" % e)
        sys.exit(board.EXIT_FLASH_ERROR)


def _run_from_flash():
    # pyexec_file("boot.py") then pyexec_file("main.py"), as ports/esp32/main.c does;
    # an exception (Ctrl-C too) is printed and the REPL takes over
    sys.path.insert(0, "")
    sys.path.insert(1, "/flash/lib")
    for script in ("boot.py", "main.py"):
        try:
            with open(script) as f:
                code = f.read()
        except OSError:
            continue
        try:
            exec(code, {"__name__": "__main__", "__file__": script})
        except SystemExit:
            raise
        except BaseException as e:  # noqa: B902  KeyboardInterrupt included, like the REPL
            sys.print_exception(e)
            return
        finally:
            code = None
            gc.collect()


if SERIAL:
    _run_from_flash()  # then micropython -i gives the REPL
else:
    if CONFIG:
        try:
            _copy_config(CONFIG)
        except OSError as e:
            print("virtual board: cannot copy %s onto flash image %s: %s" % (CONFIG, FLASH, e))
            sys.exit(board.EXIT_FLASH_ERROR)
    gc.collect()

    try:
        import main  # noqa: F401  (agent/main.py runs on import, as on the board)
    except SystemExit:
        raise
    except ImportError as e:
        if str(e) != "no module named 'main'":
            sys.print_exception(e)
            _idle("main.py crashed")
            sys.exit(board.EXIT_CRASH)
        print("virtual board: no main.py on MICROPYPATH: idle at the REPL")
        _idle("no main.py")
        sys.exit(board.EXIT_HALT)
    except BaseException as e:  # a crash: print it like the REPL would
        sys.print_exception(e)
        _idle("main.py crashed")
        sys.exit(board.EXIT_CRASH)
    _idle("main.py returned")
    sys.exit(board.EXIT_HALT)
