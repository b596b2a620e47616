"""Acceptance: the outbox survives power cuts (SIGKILL of the virtual board).

tests/mpy/outbox_writer.py runs under MicroPython on a littlefs image (the virtual
board's flash, firmware/boards/virtual/flash.py), appending records and acking now
and then; it prints `W <seq>` once an append returned. We kill it at 200 random
moments (seeded), including while it recovers, acks and compacts, and restart it on
the same image each time. Every restart must mount the image and report a state in
which nothing written is lost and no seq is handed out twice.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from testing.mpy import ROOT, micropython
from testing.mpy import mpy_path as agent_mpy_path
from wanwitness.boards.build import mpy_cross
from wanwitness.collector import protocol

KILLS = 200
SEED = 20240601
WRITER = ROOT / "tests" / "mpy" / "outbox_writer.py"
HEAP = "64K"  # an ESP32's heap; the agent runs compiled (mpy-cross), as on a board


@pytest.fixture(scope="module")
def mpy_path(tmp_path_factory) -> str:
    """The compiled agent, and flash.py compiled too so the writer fits a 64K heap."""
    out = tmp_path_factory.mktemp("mpy")
    src = ROOT / "wanwitness" / "firmware" / "boards" / "virtual" / "flash.py"
    subprocess.run([mpy_cross(), "-o", str(out / "flash.mpy"), str(src)], check=True,
                   capture_output=True, text=True)
    return agent_mpy_path(out)


class Run:
    """One boot of the writer: what it recovered and what it then did."""

    def __init__(self, text: str):
        lines = text.split("\n")
        if not text.endswith("\n"):
            lines = lines[:-1]  # cut mid-line by the kill
        self.recovered: dict | None = None
        self.pending: list[dict] = []
        self.boots: list[int] = []  # the boot of each pending record
        self.events: list[tuple[str, int]] = []  # ("W"|"a"|"A"|"c", seq)
        self.mounted = False
        dumped = False
        for line in lines:
            if not line:
                continue
            tag, _, rest = line.partition(" ")
            if tag == "M":
                self.mounted = True
            elif tag == "O":
                boot, last, acked, depth, corrupt, lost = rest.split(" ")
                self.recovered = dict(boot=int(boot), last_seq=int(last), acked=int(acked),
                                      depth=int(depth), corrupt=int(corrupt), lost=json.loads(lost))
            elif tag == "P":
                boot, _, rec = rest.partition(" ")
                self.boots.append(int(boot))
                self.pending.append(json.loads(rec))
            elif tag == "D":
                dumped = True
            elif tag in ("W", "a", "A"):
                self.events.append((tag, int(rest)))
            elif tag == "c":
                self.events.append((tag, 0))
            else:
                raise AssertionError(f"writer printed {line!r}")
        if not dumped:
            self.recovered = None  # killed before the dump was complete: nothing to check


class Ledger:
    """What the test knows from everything the writer printed so far."""

    def __init__(self):
        self.written: dict[int, int] = {}  # seq -> the boot that wrote it
        self.max_seen = 0          # highest seq ever printed or seen pending
        self.ack_done = 0          # highest ack that returned
        self.ack_tried = 0         # highest ack started (it may or may not have landed)
        self.boot = 0

    def check(self, run: Run, where: str) -> None:
        st = run.recovered
        assert st is not None
        assert st["boot"] > self.boot, f"{where}: boot id {st['boot']} did not grow"
        self.boot = st["boot"]
        acked = st["acked"]
        assert self.ack_done <= acked <= max(self.ack_tried, self.ack_done), \
            f"{where}: ack cursor {acked} outside [{self.ack_done}, {self.ack_tried}]"
        assert st["last_seq"] >= max(self.written, default=0), \
            f"{where}: recovered seq {st['last_seq']} below a written record"
        seqs = [r["seq"] for r in run.pending]
        assert seqs == sorted(set(seqs)), f"{where}: pending seqs not strictly increasing"
        assert all(acked < s <= st["last_seq"] for s in seqs), \
            f"{where}: pending outside (acked, last_seq]"
        assert st["depth"] == len(seqs), f"{where}: depth {st['depth']} != {len(seqs)} pending"
        ranges = [(a, b) for r in run.pending if r["k"] == "gap" for a, b in r["drop"]]
        present = set(seqs)
        for s in self.written:
            if s > acked and s not in present:
                assert any(a <= s <= b for a, b in ranges), \
                    f"{where}: record {s} was written, is not acked, and is gone without a gap"
        # every seq up to last_seq is pending or declared: the collector's ack can advance
        for s in range(acked + 1, st["last_seq"] + 1):
            assert s in present or any(a <= s <= b for a, b in ranges), \
                f"{where}: seq {s} is neither pending nor declared dropped"
        for s, b in zip(seqs, run.boots):
            assert b == self.written.get(s, b) and b <= st["boot"], \
                f"{where}: record {s} reported in boot {b}, written in {self.written.get(s)}"
        # what would be sent, one batch per boot, is valid protocol v1 (gap records too)
        i = 0
        while i < len(seqs):
            j = i
            while j < len(seqs) and run.boots[j] == run.boots[i]:
                j += 1
            protocol.check_batch({"v": 1, "agent": "powercut", "boot": run.boots[i],
                                  "recs": run.pending[i:j]})
            i = j
        self.max_seen = max([self.max_seen, *seqs])

    def learn(self, run: Run, where: str) -> None:
        for tag, seq in run.events:
            if tag == "W":
                assert seq > self.max_seen, f"{where}: seq {seq} handed out again"
                assert run.recovered is not None
                self.max_seen = seq
                self.written[seq] = run.recovered["boot"]
            elif tag == "a":
                self.ack_tried = max(self.ack_tried, seq)
            elif tag == "A":
                self.ack_done = max(self.ack_done, seq)


def boot(mpy_path: str, image: Path, seed: int, kill_after: float | None) -> tuple[Run, str]:
    env = dict(os.environ, MICROPYPATH=mpy_path)
    args = [micropython(), "-X", f"heapsize={HEAP}", str(WRITER), str(image), str(seed)]
    if kill_after is None:
        proc = subprocess.run([*args, "check"], env=env, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, f"check run failed:\n{proc.stdout[-2000:]}\n{proc.stderr}"
        return Run(proc.stdout), ""
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(kill_after)
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, \
        f"the writer ended by itself (status {proc.returncode}):\n{out[-2000:]}\n{err}"
    return Run(out), err


def test_outbox_survives_power_cuts(tmp_path, mpy_path):
    rng = random.Random(SEED)
    image = tmp_path / "flash.img"
    ledger = Ledger()
    stats = dict(checked=0, in_recovery=0, in_ack=0, in_compaction=0, corrupt=0, lost=0)
    started = time.monotonic()
    first, _ = boot(mpy_path, image, 0, 1.0)   # formats the image and fills the log
    ledger.learn(first, "boot 0")
    t = time.monotonic()
    calib, _ = boot(mpy_path, image, 0, None)
    ready = time.monotonic() - t    # start, mount, open, dump: this machine's boot time
    ledger.check(calib, "first check")
    for i in range(KILLS):
        # a quarter of the cuts land while it boots (mount, recovery, the dump), the
        # rest while it appends, acks and compacts
        if rng.random() < 0.25:
            delay = rng.uniform(0.5, 1.1) * ready
        else:
            delay = ready + rng.uniform(0.0, 0.2)
        run, _ = boot(mpy_path, image, rng.randrange(1 << 30), delay)
        where = f"boot {i + 1} (killed after {delay * 1000:.0f} ms)"
        if run.recovered is None:
            stats["in_recovery"] += run.mounted
        else:
            ledger.check(run, where)
            stats["checked"] += 1
            stats["corrupt"] += run.recovered["corrupt"]
            stats["lost"] += len(run.recovered["lost"])
        ledger.learn(run, where)
        last = run.events[-1][0] if run.events else None
        stats["in_ack"] += last == "a"
        stats["in_compaction"] += last == "c"
    final, _ = boot(mpy_path, image, 0, None)
    ledger.check(final, "after the last cut")
    again, _ = boot(mpy_path, image, 0, None)   # a clean log stays clean
    ledger.check(again, "second boot after the last cut")
    assert again.recovered is not None and again.recovered["corrupt"] == 0
    assert [r["seq"] for r in again.pending] == [r["seq"] for r in final.pending]
    elapsed = time.monotonic() - started
    print(f"\n{KILLS} power cuts in {elapsed:.0f} s: {len(ledger.written)} records written, "
          f"ack cursor {ledger.ack_done}..{ledger.ack_tried}, {stats['checked']} recoveries "
          f"checked, cuts during recovery {stats['in_recovery']}, during ack {stats['in_ack']}, "
          f"during compaction {stats['in_compaction']}; corrupt regions seen "
          f"{stats['corrupt']}, lost ranges {stats['lost']}")
    assert len(ledger.written) > 1000, "too few records written to mean anything"
    assert stats["in_compaction"] > 0 and stats["in_ack"] > 0 and stats["in_recovery"] > 0
