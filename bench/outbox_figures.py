"""Outbox on flash: records per KB of flash and bytes written per record.

Runs tests/mpy/outbox_figures.py under the `micropython` binary (unix port) with the
compiled agent, the virtual board's flash (a littlefs image, 4096-byte blocks,
counting every byte handed to the block device's writeblocks) and a 128 KiB heap,
then prints its figures as a table. That script appends N typical records (~120
bytes of JSON, a probe result) to an empty outbox, then N more into the full log
(compactions and gap records included), for segment sizes of 1, 2 and 4 KiB.

    .venv/bin/python -m bench.outbox_figures [--records 1000] [--heap 128K] [--json OUT]

The figures are counts, not times, so they do not depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from testing.mpy import micropython, mpy_path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "mpy" / "outbox_figures.py"

# seg  4096 B | record 121 B |  7.63 records/KB of flash | filling:   2175 B written, 1.02
# erases per record | full:   2271 B written, 1.06 erases per record (1024 dropped, ...)
LINE = re.compile(
    r"seg\s+(?P<seg>\d+) B \| record (?P<rec>\d+) B \|\s+(?P<per_kb>[\d.]+) records/KB of flash"
    r" \| filling:\s+(?P<fill_w>\d+) B written, (?P<fill_e>[\d.]+) erases per record"
    r" \| full:\s+(?P<full_w>\d+) B written, (?P<full_e>[\d.]+) erases per record"
    r"(?: \((?P<dropped>\d+) dropped)?")


def run(records: int, heap: str, timeout: float) -> tuple[str, list[dict]]:
    if not SCRIPT.is_file():
        raise SystemExit(f"{SCRIPT} is missing")
    env = dict(os.environ, MICROPYPATH=mpy_path())
    proc = subprocess.run([micropython(), "-X", f"heapsize={heap}", str(SCRIPT), str(records)],
                          cwd=str(SCRIPT.parent), env=env, capture_output=True, text=True,
                          timeout=timeout)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"{SCRIPT.name} failed (status {proc.returncode}):\n{out[-3000:]}")
    rows = []
    for line in proc.stdout.splitlines():
        m = LINE.search(line)
        if m:
            d = m.groupdict()
            rows.append({"segment_bytes": int(d["seg"]), "record_bytes": int(d["rec"]),
                         "records_per_kb_flash": float(d["per_kb"]),
                         "filling_bytes_written_per_record": int(d["fill_w"]),
                         "filling_erases_per_record": float(d["fill_e"]),
                         "full_bytes_written_per_record": int(d["full_w"]),
                         "full_erases_per_record": float(d["full_e"]),
                         "dropped": int(d["dropped"]) if d["dropped"] else None})
    if not rows:
        raise SystemExit(f"{SCRIPT.name} printed no figures this wrapper understands:\n"
                         f"{out[-3000:]}")
    return proc.stdout, rows


def table(rows: list[dict]) -> str:
    head = ["segment B", "record B", "records/KB of flash", "filling: B written/record",
            "filling: erases/record", "full: B written/record", "full: erases/record",
            "write amplification (full)"]
    body = []
    for r in rows:
        body.append([str(r["segment_bytes"]), str(r["record_bytes"]),
                     f"{r['records_per_kb_flash']:.2f}",
                     f"{r['filling_bytes_written_per_record']:,}",
                     f"{r['filling_erases_per_record']:.2f}",
                     f"{r['full_bytes_written_per_record']:,}",
                     f"{r['full_erases_per_record']:.2f}",
                     f"{r['full_bytes_written_per_record'] / r['record_bytes']:.1f}x"])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |",
             "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"]
    lines += ["| " + " | ".join(c.rjust(w) for c, w in zip(b, widths)) + " |" for b in body]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.outbox_figures",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1000,
                    help="appends into the empty log, then as many more (default 1000: "
                         "about 127 KB of frames, so the second half runs on a full 128 KiB "
                         "log)")
    ap.add_argument("--heap", default="128K", help="micropython -X heapsize (default 128K)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds (default 900)")
    ap.add_argument("--json", type=Path, metavar="OUT", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    if args.records < 10:
        ap.error("--records: at least 10")
    raw, rows = run(args.records, args.heap, args.timeout)
    for line in raw.splitlines():
        if not LINE.search(line):
            print(line)  # the script's own heading
    print(table(rows))
    print("records/KB: records held / flash blocks the log took x 4.096 (KB = 1000 B); "
          "write amplification: bytes handed to writeblocks per record / the record's JSON "
          "size (its frame on flash is 6 bytes more)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"records": args.records, "heap": args.heap,
                                         "script": str(SCRIPT.relative_to(ROOT)),
                                         "figures": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
