"""Soak: the agent for hours on the ESP32-sized board, in the outage lab.

    python -m bench.soak [--minutes 120] [--heap auto|56K] [--micropython PATH]
        [--every-s 300] [--busy-s 3] [--loss 1] [--realtime PRIO] [--seed N] [--json OUT]
        [--workdir DIR]

One long lab scenario (bench/lab: network namespaces, RFC 5737 addresses, the real
collector; root) played against the agent on the virtual board:

- the MicroPython binary of `--micropython` (default: the 32-bit build with the agent
  frozen in, `./dev mp32`) with a `--heap` heap (default: 48 KB for the agent on top of
  what the virtual board's own modules take, measured at the start; a classic ESP32's
  MicroPython heap with Wi-Fi up is about 100 KB, FACTS.md);
- 1 % packet loss on the WAN for the whole run (`--loss`);
- an internet LED that is steady while the line is idle and flickers with traffic: it
  switches between the two every `--busy-s` seconds at random (seeded), the record rate
  that wears the flash most;
- every `--every-s` seconds one outage or fault, in turn: a 30 s WAN cut, the router
  switched off for 15 s, 20 s of DNS down, an 8 s WAN cut, the agent's own Wi-Fi lost
  for 20 s (no outage: a fault of our own chain).

It prints, and writes with `--json`: outages scripted / found / missed / false /
misclassified, records lost and duplicated, the agent's resets (the board's boots after
the first, which must be 0), its heap (the largest `gc.mem_alloc()` peak and the
smallest `gc.mem_free()` its heartbeats printed; the smallest "largest free block" of
the virtual board's `micropython.mem_info()`, once a minute), the records it wrote per
day by kind, and the flash erases per day where the board counts them.

The same command runs for 72 h on a spare machine (`--minutes 4320`).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.lab import runner
from bench.lab import scenario as scn
from bench.lab.topology import LabError
from wanwitness.errors import UserError

EVENTS = (  # (what, seconds): one every --every-s, in turn
    ("wan", 30), ("router", 15), ("dns", 20), ("wan", 8), ("wifi", 20))
DOWN = {"wan": "down", "router": "off", "dns": "down", "wifi": "down"}
UP = {"wan": "up", "router": "on", "dns": "up", "wifi": "up"}
TICKS_START = (1 << 30) - 300_000
RE_HEAP = re.compile(r"heap alloc=(\d+) peak=(\d+) free=(\d+)")
RE_MEMERR = re.compile(r"memerr=(\d+)")
RE_GAP = re.compile(r"memerr=\d+ gap=(\d+)")
RE_TRACE_MEM = re.compile(r"^\S+ MemoryError", re.M)
RE_GC_USED = re.compile(r"GC: total: \d+, used: (\d+)")
RE_MAXFREE = re.compile(r"max free sz: (\d+)")
RE_BOOT = re.compile(r"\[vboard\] boot \d+: (\w+)")
RE_LOST = re.compile(r"record lost: out of memory: (\w+)")
RE_STALL = re.compile(r"loop stall (\d+) ms")


def timeline(duration_s: float, every_s: float, loss: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if loss:
        out.append({"at": 1, "set": "loss", "to": loss})
    at, i = 60.0, 0
    while at + EVENTS[i % len(EVENTS)][1] + 60 <= duration_s:
        what, secs = EVENTS[i % len(EVENTS)]
        out.append({"at": at, "set": what, "to": DOWN[what]})
        out.append({"at": at + secs, "set": what, "to": UP[what]})
        at += every_s
        i += 1
    if loss:
        out.append({"at": duration_s - 20, "set": "loss", "to": 0})
    return out


class BusyLeds(runner.LedDriver):
    """The internet LED steady while the line is idle, flickering with traffic: which
    of the two in each `busy_s` slot is a seeded coin toss."""

    def __init__(self, path: Path, lab: Any, seed: int, busy_s: float):
        super().__init__(path, lab)
        self.seed = seed
        self.busy_ms = max(1, round(busy_s * 1000))
        self.toggles = 0            # steady <-> flicker changes while lit
        self._last: bool | None = None

    def busy(self, now: int) -> bool:
        slot = now // self.busy_ms
        return random.Random(self.seed * 1_000_003 + slot).random() < 0.5

    def desired(self, now: int) -> tuple:
        internet, power, wifi = super().desired(now)
        busy = internet and self.busy(now)
        if internet and self._last is not None and busy != self._last:
            self.toggles += 1
        self._last = busy if internet else None
        return internet, power, wifi, busy

    def control_doc(self, internet: bool, power: bool, wifi: bool, *extra: Any) -> dict[str, Any]:
        doc = super().control_doc(internet, power, wifi)
        if internet and not (extra and extra[0]):
            doc["adc"][str(runner.PIN_INTERNET)] = runner.LED_STEADY
        return doc


class SoakRun(runner.Run):
    def __init__(self, sc: scn.Scenario, workdir: Path, *, seed: int | None, heap: str,
                 micropython: str, frozen: bool, busy_s: float, ticks_start: int | None,
                 meminfo_s: int):
        super().__init__(sc, workdir, seed=seed, drain_timeout_s=300)
        self.busy_s = busy_s
        self.ready_led = ("on", "blink")
        self.agent_args = ["--heap", heap, "--micropython", micropython] + (["--frozen"] if frozen else [])
        if ticks_start is not None:
            self.agent_args += ["--ticks-start", str(ticks_start)]
        # live bytes and the largest free block after a collection, every meminfo_s
        self.env["WANWITNESS_VBOARD_MEMINFO_S"] = str(meminfo_s)

    def make_leds(self) -> runner.LedDriver:
        return BusyLeds(self.control, self.lab, self.seed, self.busy_s)


def gc_block_bytes(micropython: str) -> int:
    """MICROPY_BYTES_PER_GC_BLOCK: four machine words (16 bytes on a 32-bit port)."""
    p = subprocess.run([micropython, "-c", "import sys; print(sys.maxsize > 2**31)"],
                       capture_output=True, text=True, timeout=30)
    return 32 if p.stdout.strip() == "True" else 16


def agent_figures(log_text: str, block: int) -> dict[str, Any]:
    heap = [tuple(map(int, m.groups())) for m in RE_HEAP.finditer(log_text)]
    maxfree = [int(m[1]) for m in RE_MAXFREE.finditer(log_text)]
    boots = RE_BOOT.findall(log_text)
    live = [int(m[1]) for m in RE_GC_USED.finditer(log_text)]
    # memerr= counts from 0 at every boot: the sum of each boot's last count
    survived = sum(max((int(m[1]) for m in RE_MEMERR.finditer(part)), default=0)
                   for part in RE_BOOT.split(log_text)[::2])
    return {"resets": max(0, len(boots) - 1), "reset_causes": sorted(set(boots[1:])),
            "memory_errors_survived": survived,
            "memory_errors_fatal": len(RE_TRACE_MEM.findall(log_text)),
            "heap_lines": len(heap),
            "alloc_max": max((h[0] for h in heap), default=None),
            "peak": max((h[1] for h in heap), default=None),
            "free_min": min((h[2] for h in heap), default=None),
            "live_max": max(live, default=None),   # after a collection (the board's reports)
            # the longest gap between two LED sample turns (the loop's longest stall)
            "sample_gap_max_ms": max((int(m[1]) for m in RE_GAP.finditer(log_text)), default=None),
            # gaps over the agent's STALL_MS (60), each said on the console when it happens
            "stalls": len(RE_STALL.findall(log_text)),
            # records the agent could not queue for want of memory, by kind
            "records_lost_by_kind": dict(Counter(RE_LOST.findall(log_text))),
            "largest_free_block_min": min(maxfree) * block if maxfree else None}


def store_figures(db_url: str, seconds: float) -> dict[str, Any]:
    from wanwitness import store as s
    store = s.open_store(db_url, migrate_schema=False)
    try:
        with store.engine.connect() as conn:
            kinds = dict(conn.execute(sa.select(s.records.c.k, sa.func.count())
                                      .where(s.records.c.agent == runner.AGENT_ID)
                                      .group_by(s.records.c.k)).all())
    finally:
        store.dispose()
    total = sum(kinds.values())
    day = 86400 / seconds if seconds > 0 else 0
    return {"records": total, "boots": kinds.get("boot", 0),
            "records_per_day": round(total * day),
            "per_day_by_kind": {k: round(v * day) for k, v in sorted(kinds.items())}}


def default_micropython() -> str:
    from testing import mp32
    return str(mp32.build(quiet=True))


AGENT_HEAP_KB = 48


def realtime_wrapper(workdir: Path, micropython: str, priority: int) -> str:
    """A script that runs `micropython` at SCHED_FIFO `priority` (chrt, util-linux)."""
    chrt = shutil.which("chrt")
    if chrt is None:
        raise UserError("soak: --realtime needs chrt (Debian util-linux)")
    probe = subprocess.run([chrt, "-f", str(priority), "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise UserError(f"soak: --realtime {priority}: chrt refused: {probe.stderr.strip()} (run as root)")
    path = workdir / "micropython-rt"
    path.write_text(f"#!/bin/sh\nexec {shlex.quote(chrt)} -f {priority} {shlex.quote(str(Path(micropython).resolve()))} \"$@\"\n")
    path.chmod(0o755)
    return str(path)


def auto_heap(micropython: str, frozen: bool) -> str:
    """48 KB for the agent on top of the virtual board's residue (its modules, mounted
    image and boot script: C code and ROM on an ESP32), measured with this binary."""
    from bench.agent_heap import vboard_breakdown
    with tempfile.TemporaryDirectory(prefix="wwsoak-heap-") as tmp:
        parts = vboard_breakdown(Path(tmp), micropython, Path(tmp), frozen=frozen)
    residue = sum(v for k, v in parts.items() if k != "runtime")
    return f"{AGENT_HEAP_KB + math.ceil(residue / 1024)}K"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=120)
    ap.add_argument("--heap", default="auto",
                    help="MicroPython heap (default auto: 48K for the agent + what the virtual "
                         "board's own modules take, measured now; as tests/test_agent_heap_mp32.py)")
    ap.add_argument("--micropython", help="the MicroPython binary (default: ./dev mp32's)")
    ap.add_argument("--not-frozen", action="store_true",
                    help="the binary has no agent frozen in: run the agent's .mpy files")
    ap.add_argument("--every-s", type=float, default=300, help="seconds between scripted outages")
    ap.add_argument("--busy-s", type=float, default=3, help="the busy LED's slot (s)")
    ap.add_argument("--loss", type=int, default=1, help="WAN packet loss, %% (0..20)")
    ap.add_argument("--ticks-start", type=int, default=TICKS_START,
                    help="the board's time.ticks_ms() at the start (default %(default)s: five "
                         "minutes before a 32-bit port's ticks wrap at 2**30, as after 12.4 days up); "
                         "-1: the host's clock")
    ap.add_argument("--meminfo-s", type=int, default=60,
                    help="seconds between the board's heap reports (live bytes, largest free block)")
    ap.add_argument("--realtime", type=int, default=0, metavar="PRIO",
                    help="run the agent's MicroPython at this SCHED_FIFO priority (chrt -f, 1..99; "
                         "root): on the chip the MicroPython task has a core of its own, so a busy "
                         "host's scheduler stalls are not the agent's loop gaps (default 0: off)")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--workdir", type=Path)
    a = ap.parse_args(argv)
    if a.minutes < 5:
        ap.error("--minutes: at least 5 (the first outage comes after a minute)")
    if not 60 <= a.every_s:
        ap.error("--every-s: at least 60")
    if not 0 <= a.loss <= 20:
        ap.error("--loss: 0..20 (more is a degraded line, not a soak)")
    if a.busy_s < 0.5:
        ap.error("--busy-s: at least 0.5")
    if not -1 <= a.ticks_start < 1 << 30:
        ap.error("--ticks-start: 0..2**30-1 ms, or -1")
    if a.meminfo_s < 1:
        ap.error("--meminfo-s: at least 1")
    if not 0 <= a.realtime <= 99:
        ap.error("--realtime: 0 (off) or a SCHED_FIFO priority 1..99")
    try:
        micropython = a.micropython or default_micropython()
        heap = a.heap if a.heap != "auto" else auto_heap(micropython, frozen=not a.not_frozen)
        duration = a.minutes * 60
        sc = scn.parse({"name": "soak", "duration_s": duration,
                        "description": "bench/soak.py", "timeline": timeline(duration, a.every_s, a.loss)},
                       "bench/soak.py")
        wd = (a.workdir or Path(tempfile.mkdtemp(prefix="wwsoak-"))).resolve()
        wd.mkdir(parents=True, exist_ok=True)
        runner.check_tools()
        agent_binary = realtime_wrapper(wd, micropython, a.realtime) if a.realtime else micropython
        run = SoakRun(sc, wd, seed=a.seed, heap=heap, micropython=agent_binary,
                      frozen=not a.not_frozen, busy_s=a.busy_s,
                      ticks_start=None if a.ticks_start < 0 else a.ticks_start, meminfo_s=a.meminfo_s)
        started = time.monotonic()
        res = run.through()
        seconds = time.monotonic() - started
    except (UserError, LabError) as e:
        print(f"soak: {e}", file=sys.stderr)
        return 2
    figures = {
        "minutes": round(seconds / 60, 1), "heap": heap, "micropython": micropython,
        "realtime": a.realtime,
        "seed": res["seed"], "loss_pct": a.loss, "busy_s": a.busy_s, "workdir": str(wd),
        "outages_scripted": len(res["truth"]), "found": len(res["found"]), "missed": res["missed"],
        "false": res["false"], "misclassified": res.get("misclassified", 0),
        "records_lost": res["records_lost"], "records_duplicated": res["records_duplicated"],
        "led_toggles_driven": run.leds.toggles if isinstance(run.leds, BusyLeds) else 0,
        **store_figures(run.db_url, seconds), **agent_figures((wd / "agent.log").read_text(errors="replace"), gc_block_bytes(micropython)),
    }
    for k, v in figures.items():
        print(f"{k:22} {v}")
    if a.json:
        a.json.write_text(json.dumps({"figures": figures, "result": res}, indent=1) + "\n")
    return 0 if figures["resets"] == 0 and res["missed"] == 0 and res["false"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
