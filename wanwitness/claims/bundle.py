"""The evidence bundle: a zip that anyone can check offline with nothing but Python 3.

    claim.json    the claim, exactly as `wanwitness claim --format json` prints it
    ledger.tsv    every ledger link 1..ledger_head.pos: pos, agent, seq, recv_ms, hash and
                  the entry bytes the hash is computed over (docs/protocol.md)
    outages.csv, tickets.csv, tariff.toml
                  the claim's inputs, for `wanwitness claim --outages ... ` (docs/claims.md)
    verify.py     recomputes the chain, checks claim.json's ledger_head and every record
                  behind a claimed outage; exit 0, or 1 naming the first broken link
    README.txt    how to check it

Why every link and not only the claimant's agents' records: the ledger is one chain
over all agents (h_pos depends on h_{pos-1} whatever agent wrote pos-1), so a link
left out would leave every later link, and the head, unverifiable. On a collector
shared by several households that means the others' outage records travel too.
"""

from __future__ import annotations

import os
import shlex
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from wanwitness.collector import ledger

from .. import store as s
from ..errors import UserError
from . import build as b
from . import files

LEDGER_HEADER = "pos\tagent\tseq\trecv_ms\thash\tentry\n"


def _links(conn: sa.Connection, head_pos: int, batch: int = 5000) -> Iterator[tuple]:
    L, R = s.ledger, s.records
    last = 0
    while last < head_pos:
        chunk = conn.execute(
            sa.select(L.c.pos, L.c.agent, L.c.seq, L.c.recv_ms, L.c.hash, R.c.boot, R.c.body)
            .select_from(L.outerjoin(R, sa.and_(R.c.agent == L.c.agent, R.c.seq == L.c.seq,
                                                R.c.pos == L.c.pos)))
            .where(L.c.pos > last, L.c.pos <= head_pos).order_by(L.c.pos).limit(batch)).all()
        if not chunk:
            return
        yield from chunk
        last = chunk[-1].pos


def _write_ledger(conn: sa.Connection, head: dict[str, Any], out) -> None:
    """Stream ledger.tsv, recomputing the chain on the way: a bundle is never made
    from a broken ledger (the claimant would only learn it from the other side)."""
    out.write(LEDGER_HEADER.encode())
    prev, expect = ledger.GENESIS, 1
    for pos, agent, seq, recv, digest, boot, body in _links(conn, head["pos"]):
        if pos != expect or body is None:
            raise UserError(f"the ledger is broken at link {expect}; run `wanwitness verify`")
        entry = ledger.entry_bytes(agent, boot, body)
        prev = ledger.link(prev, agent, boot, body, recv)
        if prev.hex() != digest:
            raise UserError(f"the ledger is broken at link {pos} ({agent} seq {seq}); "
                            "run `wanwitness verify`")
        out.write(f"{pos}\t{agent}\t{seq}\t{recv}\t{digest}\t".encode() + entry + b"\n")
        expect += 1
    if expect - 1 != head["pos"] or prev.hex() != head["hash"]:
        raise UserError(f"the ledger ends at link {expect - 1}, not at the claim's head "
                        f"{head['pos']}; run `wanwitness verify`")


def _readme(claim: dict[str, Any], command: str) -> str:
    head = claim["ledger_head"]
    return f"""wanwitness evidence bundle
==========================

Claim: {claim['rules']['name']}, billing period {claim['period']['label']}, total {claim['total']} {claim['currency']}.
Ledger head: link {head['pos']}, hash {head['hash']}

1. Check the records (Python 3, nothing else to install):

       python3 verify.py

   It recomputes the hash chain over ledger.tsv,

       h_0 = 32 zero bytes
       h_pos = sha256(h_(pos-1) || entry || recv_ms as ASCII digits)

   where entry is the last column of each line, byte for byte. It checks that the
   chain ends at the ledger head written in claim.json (compare it with the hash in
   the letter you received) and that every record cited for a claimed outage
   (claim.json: outages[].records) is in the chain at that position with that hash.
   Exit code 0: all good. Exit code 1: it names the first broken link.

2. Recompute the amount from the claim's inputs (needs wanwitness):

       {command}

   outages.csv is what `wanwitness outages --csv` printed for these records,
   tickets.csv the fault reports with their linked outages, tariff.toml the tariff.

Files: claim.json, ledger.tsv (pos, agent, seq, recv_ms, hash, entry; tab-separated,
UTF-8), outages.csv, tickets.csv, tariff.toml, verify.py, README.txt.
"""


def recompute_command(claim: dict[str, Any]) -> str:
    args = ["wanwitness", "claim", "--outages", "outages.csv", "--tickets", "tickets.csv",
            "--tariff", "tariff.toml", "--rules", claim["rules"]["name"],
            "--period", claim["period"]["label"], "--format", "json"]
    for key, value in sorted((claim["rules"].get("options") or {}).items()):
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, list):
            text = ",".join(str(v) for v in value)
        else:
            text = "" if value is None else str(value)
        args += ["--option", f"{key}={text}"]
    return shlex.join(args)


def _entry(name: str, mode: int = 0o644) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
    info.external_attr = mode << 16  # unzip restores these permissions
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def write_bundle(path: Path, store: s.Store, claim: dict[str, Any], inputs: b.Inputs) -> None:
    """Write the bundle for a claim built from the store (atomically: temp file, rename)."""
    if not claim.get("ledger_head"):
        raise UserError("an evidence bundle needs a claim from the store (the bundle carries "
                        "its ledger records); a claim from files has none")
    path = Path(path)
    tz = inputs.tariff.tz
    try:
        fd, tmp = tempfile.mkstemp(prefix=".wanwitness-bundle-", suffix=".zip", dir=path.parent)
    except OSError as e:
        raise UserError(f"evidence bundle {path}: cannot write it: {e.strerror}") from None
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(_entry("claim.json"), b.to_json(claim))
            with store.engine.connect() as conn, zf.open(_entry("ledger.tsv"), "w") as out:
                _write_ledger(conn, claim["ledger_head"], out)
            zf.writestr(_entry("outages.csv"), files.write_outages(inputs.outages))
            zf.writestr(_entry("tickets.csv"), files.write_tickets(inputs.tickets, tz))
            zf.writestr(_entry("tariff.toml"), files.write_tariff(
                files.TariffFile(inputs.tariff, inputs.customer, inputs.isp)))
            zf.writestr(_entry("README.txt"), _readme(claim, recompute_command(claim)))
            zf.writestr(_entry("verify.py", 0o755), VERIFY_PY)
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"evidence bundle {path}: cannot write it: {e.strerror}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# The bundle's verifier. Standalone on purpose: Python 3 standard library only, no
# wanwitness, so the other side can run it without trusting our code beyond these lines.
VERIFY_PY = r'''#!/usr/bin/env python3
"""Verify a wanwitness evidence bundle. Python 3 standard library only.

    python3 verify.py [BUNDLE_DIR]      (default: the directory this file is in)

Recomputes the ledger's hash chain from ledger.tsv,
    h_0 = 32 zero bytes;  h_pos = sha256(h_(pos-1) || entry || recv_ms in ASCII digits),
checks that it ends at claim.json's ledger_head, and that every record cited for a
claimed outage is in the chain at its position with its hash. Exit 0 when all is
well, 1 with the first broken link.
"""
import hashlib
import json
import sys
from pathlib import Path

HEADER = b"pos\tagent\tseq\trecv_ms\thash\tentry\n"


class Broken(Exception):
    pass


def read_chain(path, wanted):
    """Walk ledger.tsv; returns (count, head hash, {pos: (agent, seq, hash, entry)} for wanted)."""
    prev, expect, found = bytes(32), 1, {}
    with open(path, "rb") as f:
        if f.readline() != HEADER:
            raise Broken("ledger.tsv: not a wanwitness ledger export (bad header line)")
        for line in f:
            if not line.endswith(b"\n"):
                raise Broken("ledger.tsv: the last line is cut off")
            parts = line[:-1].split(b"\t", 5)
            if len(parts) != 6 or not parts[0].isdigit() or not parts[3].isdigit():
                raise Broken(f"ledger.tsv: link {expect}: malformed line")
            pos, agent, seq, recv, digest, entry = parts
            agent, seq = agent.decode("utf-8", "replace"), seq.decode("ascii", "replace")
            where = f"link {int(pos)} ({agent} seq {seq})"
            if int(pos) != expect:
                raise Broken(f"link {expect} is missing (next line is link {int(pos)})")
            h = hashlib.sha256(prev + entry + recv).digest()
            if h.hex() != digest.decode("ascii", "replace"):
                raise Broken(f"{where}: hash mismatch (record edited, replaced or reordered)")
            try:
                doc = json.loads(entry.decode("utf-8"))
                ok = doc["agent"] == agent and str(doc["rec"]["seq"]) == seq
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                raise Broken(f"{where}: the agent or seq column does not match the record")
            if expect in wanted:
                found[expect] = (agent, int(seq), h.hex(), doc)
            prev, expect = h, expect + 1
    return expect - 1, prev.hex(), found


def check(root):
    claim = json.loads((root / "claim.json").read_text(encoding="utf-8"))
    head = claim.get("ledger_head")
    if not head:
        raise Broken("claim.json has no ledger_head: this claim was not made from a ledger")
    claimed = [o for o in claim.get("outages", []) if o.get("claimed")]
    wanted = {r["ledger_pos"] for o in claimed for r in o.get("records", [])}
    count, last, found = read_chain(root / "ledger.tsv", wanted)
    if count != head["pos"] or last != head["hash"]:
        raise Broken(f"the chain ends at link {count} with hash {last}, but claim.json's "
                     f"ledger_head is link {head['pos']} with hash {head['hash']}")
    n = 0
    for o in claimed:
        if not o.get("records"):
            raise Broken(f"claimed outage {o['id']} cites no ledger record")
        for r in o["records"]:
            got = found.get(r["ledger_pos"])
            where = f"outage {o['id']}: record {o['agent']} seq {r['seq']} at link {r['ledger_pos']}"
            if got is None:
                raise Broken(f"{where}: no such link in the chain")
            agent, seq, digest, doc = got
            if (agent, seq, digest) != (o["agent"], r["seq"], r["hash"]):
                raise Broken(f"{where}: the chain holds {agent} seq {seq} with hash {digest} there")
            rec = doc["rec"]
            if r.get("role") == "open" and (rec.get("k") != "state" or rec.get("s") != o["class"]
                                            or doc["boot"] != o["evidence"].get("boot")):
                raise Broken(f"{where}: not the state record that opened a {o['class']} outage")
            n += 1
    return count, last, n, len(claimed)


def main(argv):
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent
    try:
        count, last, n, outages = check(root)
    except Broken as e:
        print(f"BROKEN: {e}")
        return 1
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"BROKEN: cannot read the bundle in {root}: {type(e).__name__}: {e}")
        return 1
    print(f"ok: {count} link(s), head {last} matches claim.json; "
          f"{n} record(s) behind {outages} claimed outage(s) are in the chain")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
'''
