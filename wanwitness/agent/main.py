# main.py: the agent's entry point on the board (and on the virtual board).
# Runs the app; a crash is noted on flash and the board resets. Three crashes within
# ten minutes of uptime start safe mode: report only, no sensing, so a bug in the
# sensing code cannot keep the board from saying what is wrong.
import gc
import sys
import time

import machine

gc.collect()


def _maintenance():
    # `wanwitness deploy` / `calibrate` leave this file and reset the board: this boot
    # must not start the agent, because the watchdog it starts cannot be stopped and
    # would reset the board in the middle of a file copy. One boot only: the next
    # reset starts the agent again.
    try:
        import os
        with open(".maintenance") as f:
            why = f.read()
        os.remove(".maintenance")
    except OSError:
        return False
    print("wanwitness: maintenance boot (%s): agent not started; reset to start it" % why)
    return True


def _start():
    import app  # noqa: E402

    cfg = app.settings("config.json")
    gc.collect()
    notes = []
    if app.reset_cause() == "WDT_RESET":
        # A hang: count it like a crash, with the uptime last stamped in RTC memory.
        app.note_crash(app._rtc_uptime() or 0, "watchdog reset (a task hung)")
    crashes = app.read_crashes()
    for c in crashes:
        if not c.get("told"):
            notes.append("previous boot crashed after %d s: %s" % (c.get("up", 0) // 1000, c.get("why")))
            c["told"] = True
    if notes:
        app.write_crashes(crashes)
    safe = app.crash_loop(crashes)
    gc.collect()
    try:
        app.run(cfg, safe=safe, notes=notes)
    except Exception as e:  # anything: note it, then reset like a watchdog would
        sys.print_exception(e)
        gc.collect()
        try:
            app.note_crash(time.ticks_ms(), "%s: %s" % (type(e).__name__, e))
        except MemoryError:  # the reset still comes; only the crash note is lost
            pass
        time.sleep_ms(100)
        machine.reset()


# In maintenance main.py just ends (sys.exit() here would soft-reset a board).
if not _maintenance():
    _start()
