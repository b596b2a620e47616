# The virtual board's flash (boards/virtual/flash.py) on MicroPython: erase and
# program stall the caller like a NOR chip, and every block's erases are counted.
import binascii
import os
import time

import flash
import mpyunit
from mpyunit import eq

IMG = "/tmp/wanwitness-test-vflash-%s.img" % binascii.hexlify(os.urandom(4)).decode()


def _dev(**kw):
    try:
        os.remove(IMG)
    except OSError:
        pass
    return flash.FileFlash(IMG, size=16 * 4096, create=True, sync=False, **kw)


def _done(dev):
    dev.close()
    os.remove(IMG)


def test_erase_stalls_the_caller_45ms_by_default():
    dev = _dev()
    t0 = time.ticks_ms()
    dev.ioctl(6, 3)
    took = time.ticks_diff(time.ticks_ms(), t0)
    _done(dev)
    assert 45 <= took < 200, took
    eq(dev.max_stall_us, 45000)


def test_program_stalls_per_page_started():
    dev = _dev(erase_ms=0, page_us=2000)
    t0 = time.ticks_ms()
    dev.writeblocks(1, b"x" * 300, 200)  # bytes 200..499: pages 0 and 1
    took = time.ticks_diff(time.ticks_ms(), t0)
    _done(dev)
    assert 4 <= took < 100, took
    eq(dev.stall_us, 4000)


def test_timing_off():
    dev = _dev(erase_ms=0, page_us=0)
    t0 = time.ticks_ms()
    for _ in range(20):
        dev.ioctl(6, 2)
    took = time.ticks_diff(time.ticks_ms(), t0)
    _done(dev)
    assert took < 45, took
    eq(dev.stall_us, 0)


def test_per_block_erase_counter():
    dev = _dev(erase_ms=0, page_us=0)
    for _ in range(3):
        dev.ioctl(6, 5)
    dev.ioctl(6, 7)
    dev.writeblocks(9, b"\x00" * 4096)  # simple protocol: erases block 9 first
    counts = list(dev.block_erases)
    _done(dev)
    eq(counts[5], 3)
    eq(counts[7], 1)
    eq(counts[9], 1)
    eq(sum(counts), 5)
    eq(dev.erases, 5)
    eq(dev.max_block_erases(), 3)


def test_mount_times_the_filesystem_not_the_format():
    # formatting a new image is free; a littlefs write on the mounted one erases and stalls
    try:
        os.remove(IMG)
    except OSError:
        pass
    dev = flash.mount(IMG, "/vflash", size=64 * 1024, chdir=False, sync=False)
    eq(dev.erases, 0)
    for i in range(10):  # appends past littlefs's inline size: data blocks get erased
        with open("/vflash/f", "ab") as f:
            f.write(b"%03d" % i + b"r" * 597)
    erases, stall, top = dev.erases, dev.stall_us, dev.max_stall_us
    flash.umount("/vflash", dev)
    os.remove(IMG)
    assert erases >= 1, erases
    assert stall >= erases * 45000, (stall, erases)
    eq(top, 45000)


mpyunit.main(globals())
