# app.App's tasks on MicroPython: a MemoryError at the top of a task starts it again
# (counted) instead of ending it, which would stop the watchdog's feeding; a record that
# finds no block takes the reserve kept for it, and one lost anyway is said in the ledger.
import asyncio

import app
import mpyunit
from mpyunit import eq, raises


class _Counts:
    # what App._outlive_oom uses of the App
    mem_errors = 0


def test_a_memory_error_starts_the_task_again_and_counts():
    box = _Counts()
    starts = []

    async def task():
        starts.append(len(starts))
        if len(starts) < 3:
            bytearray(1 << 20)  # a real MemoryError: more than the heap
        return "ended"

    eq(asyncio.run(app.App._outlive_oom(box, task)), "ended")
    eq(starts, [0, 1, 2])
    eq(box.mem_errors, 2)


def test_other_errors_still_end_the_task():
    box = _Counts()

    async def task():
        raise ValueError("a bug")

    raises(ValueError, lambda: asyncio.run(app.App._outlive_oom(box, task)))
    eq(box.mem_errors, 0)


def test_a_cancel_ends_it():
    box = _Counts()

    async def task():
        await asyncio.sleep_ms(10000)

    async def main():
        t = asyncio.create_task(app.App._outlive_oom(box, task))
        await asyncio.sleep_ms(20)
        t.cancel()
        try:
            await t
        except asyncio.CancelledError:
            return "cancelled"
        return "not cancelled"

    eq(asyncio.run(main()), "cancelled")


class _Clock:
    def now(self):
        return 1000

    def utc_ms(self, t):
        return None


class _TightOutbox:
    # A heap with no block for a record until `room()` says so (the real one: the reserve
    # given up, or memory freed by then).
    def __init__(self, room):
        self.room = room
        self.q = []
        self.tries = 0

    def queue(self, rec):
        self.tries += 1
        if not self.room():
            raise MemoryError("memory allocation failed, allocating 280 bytes")
        self.q.append(rec)

    def queued(self):
        return len(self.q)


class _App(app.App):
    # record() and the heartbeat's _after_oom() with nothing else of an App.
    def __init__(self, room):
        self.clock = _Clock()
        self.outbox = _TightOutbox(lambda: room(self))
        self.mem_errors = 0
        self.lost = 0
        self._lost_said = 0
        self._reserve = bytearray(app.RESERVE)
        self._say = []
        self.flush_ev = asyncio.Event()

    def _announce(self):
        pass


def test_a_record_with_no_block_takes_the_reserve_and_is_kept():
    a = _App(lambda a: a._reserve is None)  # room only once the reserve is given up
    a.record({"k": "state", "s": "isp_down"})
    eq([r["s"] for r in a.outbox.q], ["isp_down"])
    eq((a.outbox.tries, a.mem_errors, a.lost), (3, 1, 0))
    eq(a._reserve, None)
    a._after_oom()  # the next heartbeat takes the reserve back, and has nothing to say
    eq(len(a._reserve), app.RESERVE)
    eq(len(a.outbox.q), 1)


def test_a_record_lost_anyway_is_said_in_an_error_record_once_there_is_room():
    full = [True]
    a = _App(lambda a: not full[0])
    a._reserve = None  # given up already
    a.record({"k": "state", "s": "local_down"})
    a.record({"k": "probe", "ok": False})
    eq((a.outbox.q, a.lost, a.mem_errors), ([], 2, 2))
    full[0] = False
    a._after_oom()
    eq(len(a._reserve), app.RESERVE)
    eq([(r["k"], r.get("key"), r.get("msg")) for r in a.outbox.q],
       [("error", "memory", "2 record(s) lost: no memory to queue them")])
    a._after_oom()  # said once
    eq(len(a.outbox.q), 1)


def test_without_room_for_the_reserve_nothing_is_said_yet():
    a = _App(lambda a: False)
    a._reserve = None
    a.record({"k": "state", "s": "up"})
    try:
        app.bytearray = lambda n: bytearray(1 << 24)  # no block for the reserve either
        a._after_oom()
    finally:
        del app.bytearray
    eq((a._reserve, a.lost, a._lost_said), (None, 1, 0))


mpyunit.main(globals())
