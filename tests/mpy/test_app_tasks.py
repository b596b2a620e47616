# app.App's tasks on MicroPython: a MemoryError at the top of a task starts it again
# (counted) instead of ending it, which would stop the watchdog's feeding.
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


mpyunit.main(globals())
