# The virtual board's flash (MicroPython, unix port only).
#
# FileFlash is a block device backed by an image file, speaking MicroPython's
# extended block-device protocol (docs/library/vfs.rst "Block devices": readblocks /
# writeblocks with a byte offset, ioctl 1..6), which littlefs needs. Blocks are
# 4096 bytes like an ESP32's SPI flash sector; the default 2 MiB is the size of the
# `vfs` partition of a 4 MB ESP32 image.
#
# Power cuts: every writeblocks() goes to the file at once and is flushed, so when
# the micropython process is killed (SIGKILL) the image holds exactly what a board
# would after losing power: each block program either happened or not, the one in
# flight possibly torn. Erase writes 0xFF like NOR flash does.
#
# Timing, as on the chip: an erase stalls the caller (on an ESP32 the only task, since
# the SPI flash is the code's flash too and the cache is off while it erases) for
# erase_ms per 4 KiB sector, a program for page_us per 256-byte page started. Defaults
# are the typical figures of the Winbond W25Q32JV datasheet (rev C, 2016, section 9.6
# AC electrical characteristics: sector erase tSE 45 ms typ / 400 ms max, page program
# tPP 0.4 ms typ / 3 ms max), a 4 MB part common on ESP32 modules. 0 turns timing off
# (counting-only figures and fast unit tests). The stall is time.sleep_us: the process
# (the agent's only task) does nothing else meanwhile, like the chip.
#
# Wear: block_erases[i] counts the erases of block i (saturating at 65535); the real
# ESP32 has no such counter, so the agent estimates its own; this one checks that.
#
# mount() creates and formats the image on first use only; an image that exists but
# does not mount is an error, never silently reformatted (that would lose records).
import os
import time
import vfs
from array import array
from micropython import const

BLOCK_SIZE = const(4096)
_BLANK = const(256)
DEFAULT_SIZE = const(2 * 1024 * 1024)
ERASE_MS = const(45)   # W25Q32JV tSE typical (4 KiB sector erase)
PAGE_US = const(400)   # W25Q32JV tPP typical (256-byte page program)
PAGE_SIZE = const(256)

_IOCTL_INIT = const(1)
_IOCTL_DEINIT = const(2)
_IOCTL_SYNC = const(3)
_IOCTL_BLOCK_COUNT = const(4)
_IOCTL_BLOCK_SIZE = const(5)
_IOCTL_BLOCK_ERASE = const(6)


class FileFlash:
    """Block device on an image file; counts what is written, for wear figures."""

    def __init__(self, path, size=DEFAULT_SIZE, block_size=BLOCK_SIZE, create=False, sync=True,
                 erase_ms=ERASE_MS, page_us=PAGE_US):
        self.path = path
        self.erase_ms = erase_ms
        self.page_us = page_us
        self.block_size = block_size
        self.sync = sync  # flush (fsync on the unix port) after every write; tests may skip it
        # An erased stretch, written block_size // len times per erase: allocated once (an
        # erase may run on a full heap) and small (on an ESP32 the erase is C, no heap).
        self._blank = b"\xff" * _BLANK if block_size % _BLANK == 0 else b"\xff" * block_size
        if create:
            with open(path, "wb") as f:
                for _ in range(size // block_size * (block_size // len(self._blank))):
                    f.write(self._blank)
        self._f = open(path, "r+b")
        self.blocks = self._f.seek(0, 2) // block_size
        if self.blocks < 2:
            self._f.close()
            raise OSError("flash image %s is too small (%d blocks)" % (path, self.blocks))
        self.block_erases = array("H", bytes(2 * self.blocks))
        self.reset_counters()

    def reset_counters(self):
        self.bytes_written = 0   # bytes handed to writeblocks (programmed)
        self.bytes_read = 0
        self.erases = 0          # blocks erased
        self.stall_us = 0        # time spent stalled in erase/program (simulated)
        self.max_stall_us = 0    # longest single erase or program call

    def readblocks(self, block, buf, offset=0):
        self._f.seek(block * self.block_size + offset)
        n = self._f.readinto(buf)
        if n != len(buf):
            raise OSError("flash image %s: short read at block %d" % (self.path, block))
        self.bytes_read += n

    def writeblocks(self, block, buf, offset=None):
        if offset is None:
            # The simple protocol (whole blocks, no offset): erase first, as FAT expects.
            for i in range(len(buf) // self.block_size):
                self._erase(block + i)
            offset = 0
        self._f.seek(block * self.block_size + offset)
        self._f.write(buf)
        if self.sync:
            self._f.flush()
        self.bytes_written += len(buf)
        if self.page_us:
            # pages started: a program never crosses a page boundary on the chip
            first = offset // PAGE_SIZE
            last = (offset + len(buf) - 1) // PAGE_SIZE
            self._stall((last - first + 1) * self.page_us)

    def _stall(self, us):
        time.sleep_us(us)
        self.stall_us += us
        if us > self.max_stall_us:
            self.max_stall_us = us

    def max_block_erases(self):
        m = 0
        for n in self.block_erases:
            if n > m:
                m = n
        return m

    def _erase(self, block):
        self._f.seek(block * self.block_size)
        for _ in range(self.block_size // len(self._blank)):
            self._f.write(self._blank)
        if self.sync:
            self._f.flush()
        self.erases += 1
        if self.block_erases[block] < 65535:
            self.block_erases[block] += 1
        if self.erase_ms:
            self._stall(self.erase_ms * 1000)

    def ioctl(self, op, arg):
        if op == _IOCTL_BLOCK_COUNT:
            return self.blocks
        if op == _IOCTL_BLOCK_SIZE:
            return self.block_size
        if op == _IOCTL_BLOCK_ERASE:
            self._erase(arg)
            return 0
        if op == _IOCTL_SYNC:
            if self.sync:
                self._f.flush()
            return 0
        if op == _IOCTL_INIT or op == _IOCTL_DEINIT:
            return 0
        return None

    def close(self):
        self._f.close()


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _abspath(p):
    # mount() chdirs into the flash: resolve a relative image path first
    if not p.startswith("/"):
        cwd = os.getcwd()
        p = (cwd if cwd.endswith("/") else cwd + "/") + p
    return p


def mount(image_path, mountpoint="/flash", size=DEFAULT_SIZE, chdir=True, sync=True,
          erase_ms=ERASE_MS, page_us=PAGE_US):
    """Mount the littlefs image at mountpoint (creating and formatting it the first
    time) and chdir there, so relative paths (`ob/...`, `config.json`) resolve as on
    an ESP32 whose filesystem is at `/`. size applies to a new image only. Returns
    the FileFlash (for its counters).
    Raises OSError with the image path when an existing image does not mount.
    sync=False skips the flush after each write: faster, and still exact for a killed
    process (the kernel keeps what was written); only an OS crash could lose more.
    erase_ms / page_us: the chip's erase and program stalls (0 = none); formatting a
    new image is never timed."""
    image_path = _abspath(image_path)
    if not _exists(image_path):
        # Made and formatted under another name, then renamed: a process killed while
        # creating it leaves no half-made image behind.
        tmp = image_path + ".new"
        dev = FileFlash(tmp, size, create=True, erase_ms=0, page_us=0)
        vfs.VfsLfs2.mkfs(dev)
        dev.close()
        os.rename(tmp, image_path)
    dev = FileFlash(image_path, sync=sync, erase_ms=erase_ms, page_us=page_us)
    try:
        fs = vfs.VfsLfs2(dev)
    except OSError as e:
        dev.close()
        raise OSError("flash image %s does not mount as littlefs (%s)" % (image_path, e))
    try:
        vfs.mount(fs, mountpoint)
    except OSError:
        dev.close()
        raise
    if chdir:
        os.chdir(mountpoint)
    return dev


def umount(mountpoint="/flash", dev=None):
    """Undo mount(): leave the mount point, unmount, close the image."""
    if os.getcwd().startswith(mountpoint):
        os.chdir("/")
    vfs.umount(mountpoint)
    if dev is not None:
        dev.close()
