"""Heap census: what the agent's live heap holds, by type, and what grew between two
moments of a run.

The 32-bit build (`./dev mp32`) prints a census for `micropython.mem_info(1)`
(testing/heap_census.c): a `CENSUS <what> <count> <bytes>` line per kind of object after
each `GC: total …` line. The virtual board prints one every WANWITNESS_VBOARD_MEMINFO_S
seconds, after a collection, when WANWITNESS_VBOARD_MEMINFO_MAP is set. So:

    WANWITNESS_VBOARD_MEMINFO_MAP=1 python -m bench.soak --minutes 6 --heap 128K \\
        --meminfo-s 20 --workdir /tmp/census
    python -m bench.heap_census /tmp/census/agent.log [--from 0] [--to -1] [--min 200]
        [--track gen:_dns,socket]

prints the two snapshots side by side (bytes and counts, largest first, with the
difference), and with --track one line per snapshot for the kinds named: how they grow
over the run. A kind that only grows is a leak (the DNS query left waiting after its
round, found this way: `gen:_dns`, `socket`, `Task`, seven of each after one outage).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

RE_GC = re.compile(r"^(\S+ )?GC: total: \d+, used: (\d+)")
RE_CENSUS = re.compile(r"CENSUS (\S+) (\d+) (\d+)\s*$")


@dataclass
class Snapshot:
    at: str                      # the log line's time stamp ("" if it has none)
    used: int                    # GC used bytes (after the collection)
    kinds: dict[str, tuple[int, int]] = field(default_factory=dict)  # what -> (count, bytes)


def parse(text: str) -> list[Snapshot]:
    snaps: list[Snapshot] = []
    for line in text.splitlines():
        m = RE_GC.search(line)
        if m:
            snaps.append(Snapshot((m.group(1) or "").strip(), int(m.group(2))))
            continue
        c = RE_CENSUS.search(line)
        if c and snaps:
            snaps[-1].kinds[c.group(1)] = (int(c.group(2)), int(c.group(3)))
    return [s for s in snaps if s.kinds]


def compare(a: Snapshot, b: Snapshot, min_bytes: int) -> str:
    rows = []
    for k in set(a.kinds) | set(b.kinds):
        (na, ba), (nb, bb) = a.kinds.get(k, (0, 0)), b.kinds.get(k, (0, 0))
        if max(ba, bb) >= min_bytes or abs(bb - ba) >= 64:
            rows.append((bb, k, na, ba, nb, bb - ba))
    rows.sort(key=lambda r: (-r[0], r[1]))
    out = [f"from {a.at or 'first'} (used {a.used:,} B) to {b.at or 'last'} "
           f"(used {b.used:,} B): {b.used - a.used:+,} B",
           "",
           "| what | count | bytes | count | bytes | change, bytes |",
           "|---|---:|---:|---:|---:|---:|"]
    for bb, k, na, ba, nb, d in rows:
        out.append(f"| `{k}` | {na} | {ba:,} | {nb} | {bb:,} | {d:+,} |")
    return "\n".join(out)


def track(snaps: list[Snapshot], kinds: list[str]) -> str:
    out = ["| at | used | " + " | ".join(f"`{k}` n / B" for k in kinds) + " |",
           "|---|---:|" + "---:|" * len(kinds)]
    for s in snaps:
        cells = " | ".join("%d / %d" % s.kinds.get(k, (0, 0)) for k in kinds)
        out.append(f"| {s.at} | {s.used:,} | {cells} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.heap_census",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("log", type=Path, help="a console log with CENSUS lines (agent.log)")
    ap.add_argument("--from", dest="first", type=int, default=0,
                    help="the first snapshot to compare, by index (default 0)")
    ap.add_argument("--to", dest="last", type=int, default=-1,
                    help="the second, by index (default -1: the last)")
    ap.add_argument("--min", type=int, default=200, help="leave out kinds under this many bytes")
    ap.add_argument("--track", help="comma-separated kinds to follow over every snapshot")
    a = ap.parse_args(argv)
    try:
        text = a.log.read_text(errors="replace")
    except OSError as e:
        print(f"heap_census: cannot read {a.log}: {e.strerror}", file=sys.stderr)
        return 2
    snaps = parse(text)
    if not snaps:
        print(f"heap_census: {a.log} has no census (CENSUS lines after a `GC: total` line): "
              "run the board with WANWITNESS_VBOARD_MEMINFO_S and WANWITNESS_VBOARD_MEMINFO_MAP "
              "set, on ./dev mp32's build", file=sys.stderr)
        return 2
    try:
        first, last = snaps[a.first], snaps[a.last]
    except IndexError:
        print(f"heap_census: --from/--to out of range: the log has {len(snaps)} snapshots",
              file=sys.stderr)
        return 2
    print(compare(first, last, a.min))
    if a.track:
        print()
        print(track(snaps, [k.strip() for k in a.track.split(",") if k.strip()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
