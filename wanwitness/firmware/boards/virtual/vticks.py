# The esp32 port's time base for the virtual board (unix port): run.py imports this
# first, so every later `import select` (the agent, the frozen asyncio) gets this.
#   - select.poll().ipoll(timeout) wakes on 10 ms FreeRTOS ticks: on the esp32 port
#     the poll loop of extmod/modselect.c waits in MICROPY_EVENT_POLL_HOOK, which is
#     ulTaskNotifyTake(pdFALSE, 1), one tick (portTICK_PERIOD_MS = 10), and returns at
#     the first tick after the timeout ran out. So asyncio.sleep_ms(20) wakes 20-30 ms
#     later. time.sleep_ms() stays exact: mp_hal_delay_ms() (ports/esp32/mphalport.c)
#     waits whole ticks and busy-waits the rest.
#   Tick length: `tick_ms` in the control file (default 10; 0 = wake at the timeout).
import sys

import select as _select
import time as _time

TICK_MS = 10

tick_ms = None        # set by a test; None = the control file's tick_ms (default 10)


def _tick():
    if tick_ms is not None:
        return tick_ms
    b = sys.modules.get("board")
    if b is None:
        return TICK_MS
    t = b.control.get("tick_ms", TICK_MS)
    return t if isinstance(t, int) and t >= 0 else TICK_MS


class _Poll:
    # select.poll() whose timeouts end on a tick boundary (of the real clock).
    def __init__(self):
        self._p = _select.poll()

    def register(self, obj, *a):
        return self._p.register(obj, *a)

    def unregister(self, obj):
        return self._p.unregister(obj)

    def modify(self, obj, ev):
        return self._p.modify(obj, ev)

    def _round(self, timeout):
        tk = _tick()
        if timeout is None or timeout <= 0 or tk <= 0:
            return timeout
        now = _time.ticks_ms()
        return timeout + (-(now + timeout)) % tk

    def poll(self, timeout=-1):
        return self._p.poll(self._round(timeout))

    def ipoll(self, timeout=-1, flags=0):
        return self._p.ipoll(self._round(timeout), flags)


def poll():
    return _Poll()


class _Select:
    # the `select` module with poll() replaced (what asyncio and the agent use of it)
    poll = poll
    POLLIN = _select.POLLIN
    POLLOUT = _select.POLLOUT
    POLLERR = _select.POLLERR
    POLLHUP = _select.POLLHUP


def install(tick=None):
    """Put the wrapped `select` into sys.modules (before asyncio is imported).
    tick: the tick length in ms; None = the control file's tick_ms (default 10)."""
    global tick_ms
    tick_ms = tick
    sys.modules["select"] = _Select
