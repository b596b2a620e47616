"""The evidence bundle: a zip that anyone can check offline with nothing but Python 3.

    claim.json    the claim, exactly as `wanwitness claim --format json` prints it
    ledger.tsv    every ledger link 1..ledger_head.pos: pos, agent, seq, recv_ms, hash and
                  the entry bytes the hash is computed over (docs/protocol.md)
    outages.csv, tickets.csv, tariff.toml
                  the claim's inputs, for `wanwitness claim --outages ... ` (docs/claims.md)
    stamps/       trusted timestamps (RFC 3161) of the ledger head, when the collector has
                  them (`wanwitness stamp`): stamps.json lists them, N.tsr is each TSA's
                  reply as received, tsa-ca.pem the TSAs' CA certificates ([stamp]
                  tsa_certs) or N-certs.pem the certificates the token carries
    verify.py     recomputes the chain, checks claim.json's ledger_head, every record
                  behind a claimed outage and that each stamp's imprint is the chain's
                  hash at its link; exit 0, or 1 naming the first broken link or the
                  stamp the chain contradicts

Which stamps: the first stamp position at or after the claim's newest cited record and
every one before it (the later ones add nothing for this claim).
    README.txt    how to check it

Why every link and not only the claimant's agents' records: the ledger is one chain
over all agents (h_pos depends on h_{pos-1} whatever agent wrote pos-1), so a link
left out would leave every later link, and the head, unverifiable. On a collector
shared by several households that means the others' outage records travel too.
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from wanwitness.collector import ledger, stamp
from wanwitness.collector.timeline import iso

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


def _write_ledger(conn: sa.Connection, head: dict[str, Any], out,
                  marks: frozenset[int] = frozenset()) -> dict[int, str]:
    """Stream ledger.tsv, recomputing the chain on the way: a bundle is never made
    from a broken ledger (the claimant would only learn it from the other side).
    Returns the hashes at the positions in `marks`."""
    found: dict[int, str] = {}
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
        if pos in marks:
            found[pos] = digest
        expect += 1
    if expect - 1 != head["pos"] or prev.hex() != head["hash"]:
        raise UserError(f"the ledger ends at link {expect - 1}, not at the claim's head "
                        f"{head['pos']}; run `wanwitness verify`")
    return found


def _newest_cited(claim: dict[str, Any]) -> int:
    """The ledger position of the claim's newest cited record (the head when none)."""
    cited = [r["ledger_pos"] for o in claim.get("outages", []) if o.get("claimed")
             for r in o.get("records", [])]
    return max(cited) if cited else int(claim["ledger_head"]["pos"])


def _token_certs(reply: bytes) -> bytes:
    """The certificates a TSA's token carries, as PEM."""
    import rfc3161_client as tsp
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    certs = tsp.decode_timestamp_response(reply).signed_data.certificates
    return b"".join(x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)
                    for der in sorted(certs))


def _write_stamps(zf: zipfile.ZipFile, chosen: list[stamp.Stamp], at: dict[int, str],
                  cas: list[bytes]) -> None:
    listing = []
    for n, st in enumerate(chosen, 1):
        when = iso(st.gen_ms)
        if at.get(st.pos) != st.hash:
            raise UserError(f"stamp {st.id} by {st.tsa} at {when} (link {st.pos}) contradicts the "
                            f"ledger: it stamped {st.hash}, the ledger has {at.get(st.pos)} there; "
                            "run `wanwitness verify`")
        zf.writestr(_entry(f"stamps/{n}.tsr"), st.reply)
        item: dict[str, Any] = {"token": f"stamps/{n}.tsr", "tsa": st.tsa, "pos": st.pos,
                                "hash": st.hash, "gen_time": when}
        if cas:
            item["ca_file"] = "stamps/tsa-ca.pem"
        else:
            # Without the TSA's CA, the token's own certificate is the anchor: openssl
            # then shows the key in it signed; that it is the TSA's is for the reader.
            zf.writestr(_entry(f"stamps/{n}-certs.pem"), _token_certs(st.reply))
            item["ca_file"] = f"stamps/{n}-certs.pem"
            item["partial_chain"] = True
        listing.append(item)
    if cas:
        zf.writestr(_entry("stamps/tsa-ca.pem"), b"".join(cas))
    zf.writestr(_entry("stamps/stamps.json"), json.dumps(listing, indent=2) + "\n")


STAMPS_README = """
3. Trusted timestamps (stamps/): a time-stamping authority (TSA, RFC 3161) signed, at
   the time in its token, the SHA-256 of the 32 bytes of the ledger's hash at a link.
   verify.py checks that each token's imprint is that hash of this chain at that link
   (a chain rebuilt after the stamp fails, naming the stamp), and prints for each
   token the OpenSSL command that checks the TSA's signature, e.g.

       openssl ts -verify -digest <sha256 of the link's hash> -in stamps/1.tsr -CAfile stamps/tsa-ca.pem

   "Verification: OK" means the TSA signed that value at that time. Check the CA
   certificate (stamps/tsa-ca.pem or stamps/N-certs.pem) against what the TSA publishes.
"""


def _readme(claim: dict[str, Any], command: str, stamped: bool = False) -> str:
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

{STAMPS_README if stamped else ""}
Files: claim.json, ledger.tsv (pos, agent, seq, recv_ms, hash, entry; tab-separated,
UTF-8), outages.csv, tickets.csv, tariff.toml, verify.py, README.txt{", stamps/" if stamped else ""}.
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


def write_bundle(path: Path, store: s.Store, claim: dict[str, Any], inputs: b.Inputs,
                 tsa_certs: tuple[str, ...] | list[str] = ()) -> None:
    """Write the bundle for a claim built from the store (atomically: temp file, rename);
    with the stamps that cover its records and the TSAs' CA certificates (tsa_certs:
    PEM files) or else those the tokens carry."""
    if not claim.get("ledger_head"):
        raise UserError("an evidence bundle needs a claim from the store (the bundle carries "
                        "its ledger records); a claim from files has none")
    path = Path(path)
    tz = inputs.tariff.tz
    chosen = stamp.covering(stamp.stamps(store, upto=int(claim["ledger_head"]["pos"])),
                            _newest_cited(claim))
    cas = stamp.load_cas(tsa_certs) if chosen else []
    try:
        fd, tmp = tempfile.mkstemp(prefix=".wanwitness-bundle-", suffix=".zip", dir=path.parent)
    except OSError as e:
        raise UserError(f"evidence bundle {path}: cannot write it: {e.strerror}") from None
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(_entry("claim.json"), b.to_json(claim))
            with store.engine.connect() as conn, zf.open(_entry("ledger.tsv"), "w") as out:
                at = _write_ledger(conn, claim["ledger_head"], out,
                                   frozenset(st.pos for st in chosen))
            if chosen:
                _write_stamps(zf, chosen, at, cas)
            zf.writestr(_entry("outages.csv"), files.write_outages(inputs.outages))
            zf.writestr(_entry("tickets.csv"), files.write_tickets(inputs.tickets, tz))
            zf.writestr(_entry("tariff.toml"), files.write_tariff(
                files.TariffFile(inputs.tariff, inputs.customer, inputs.isp)))
            zf.writestr(_entry("README.txt"), _readme(claim, recompute_command(claim), bool(chosen)))
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
claimed outage is in the chain at its position with its hash. With trusted timestamps
(stamps/stamps.json, RFC 3161 tokens): that each token's messageImprint is SHA-256 of
the 32 bytes of the chain's hash at the token's link, and it prints the `openssl ts
-verify` command that checks the TSA's signature. Exit 0 when all is well, 1 with the
first broken link or the stamp the chain contradicts.
"""
import hashlib
import json
import sys
from pathlib import Path

HEADER = b"pos\tagent\tseq\trecv_ms\thash\tentry\n"


class Broken(Exception):
    pass


# --- just enough DER (X.690) to read a TimeStampResp (RFC 3161) -----------------------

OID_SIGNED_DATA = bytes.fromhex("2a864886f70d010702")    # 1.2.840.113549.1.7.2
OID_TST_INFO = bytes.fromhex("2a864886f70d0109100104")   # 1.2.840.113549.1.9.16.1.4
OID_SHA256 = bytes.fromhex("608648016503040201")         # 2.16.840.1.101.3.4.2.1


def der_item(buf, i, end):
    """The DER element at buf[i:end]: (tag byte, start of its contents, end of them)."""
    if i + 2 > end:
        raise ValueError("cut off")
    tag, n, j = buf[i], buf[i + 1], i + 2
    if tag & 0x1F == 0x1F:
        raise ValueError("a multi-byte tag")
    if n & 0x80:
        k = n & 0x7F
        if k == 0 or k > 4 or j + k > end:
            raise ValueError("an indefinite or bad length")
        n = int.from_bytes(buf[j:j + k], "big")
        j += k
    if j + n > end:
        raise ValueError("cut off")
    return tag, j, j + n


def der_children(buf, parent, want):
    """The elements inside `parent` (tag, start, end), whose tags must begin with `want`."""
    _tag, i, end = parent
    out = []
    while i < end:
        out.append(der_item(buf, i, end))
        i = out[-1][2]
    if len(out) < len(want) or any(o[0] != w for o, w in zip(out, want)):
        raise ValueError("not the structure of a timestamp token")
    return out


def read_token(buf):
    """(hash algorithm OID bytes, hashed message, genTime text) of a TimeStampResp."""
    resp = der_item(buf, 0, len(buf))
    if resp[0] != 0x30 or resp[2] != len(buf):
        raise ValueError("not one DER SEQUENCE")
    status, token = der_children(buf, resp, [0x30, 0x30])[:2]
    code = der_children(buf, status, [0x02])[0]
    if buf[code[1]:code[2]] not in (b"\x00", b"\x01"):
        raise ValueError("the TSA did not grant it")
    oid, wrapped = der_children(buf, token, [0x06, 0xA0])[:2]
    if buf[oid[1]:oid[2]] != OID_SIGNED_DATA:
        raise ValueError("not SignedData")
    signed = der_children(buf, wrapped, [0x30])[0]
    encap = der_children(buf, signed, [0x02, 0x31, 0x30])[2]
    ctype, econtent = der_children(buf, encap, [0x06, 0xA0])[:2]
    if buf[ctype[1]:ctype[2]] != OID_TST_INFO:
        raise ValueError("not a TSTInfo")
    octets = der_children(buf, econtent, [0x04])[0]
    info = der_item(buf, octets[1], octets[2])
    if info[0] != 0x30 or info[2] != octets[2]:
        raise ValueError("TSTInfo is not one SEQUENCE")
    _v, _policy, imprint, _serial, gen = der_children(buf, info, [0x02, 0x06, 0x30, 0x02, 0x18])[:5]
    alg, hashed = der_children(buf, imprint, [0x30, 0x04])[:2]
    alg_oid = der_children(buf, alg, [0x06])[0]
    t = buf[gen[1]:gen[2]].decode("ascii")
    if len(t) < 15 or not t[:14].isdigit() or not t.endswith("Z"):
        raise ValueError(f"genTime {t!r}")
    when = f"{t[0:4]}-{t[4:6]}-{t[6:8]}T{t[8:10]}:{t[10:12]}:{t[12:]}"
    return buf[alg_oid[1]:alg_oid[2]], buf[hashed[1]:hashed[2]], when


def check_stamps(root, at, count):
    """Each stamp's imprint against the chain's hash at its link; returns the lines to print."""
    listing = json.loads((root / "stamps" / "stamps.json").read_text(encoding="utf-8"))
    lines = []
    for item in listing:
        token, pos = item["token"], int(item["pos"])
        try:
            alg, hashed, when = read_token((root / token).read_bytes())
        except ValueError as e:
            raise Broken(f"{token}: not a readable RFC 3161 timestamp reply: {e}")
        name = f"stamp {token} by {item['tsa']} at {when} (link {pos})"
        if alg != OID_SHA256:
            raise Broken(f"{name}: its imprint is not SHA-256")
        if pos < 1 or pos > count:
            raise Broken(f"{name}: the chain has no link {pos}")
        digest = hashlib.sha256(bytes.fromhex(at[pos])).digest()
        if hashed != digest:
            raise Broken(f"{name} contradicts the chain: the TSA stamped a link {pos} whose hash "
                         f"has SHA-256 {hashed.hex()}, this chain's link {pos} is {at[pos]} "
                         f"(SHA-256 {digest.hex()}): the chain was rebuilt after the stamp")
        lines.append(f"stamp: link {pos} (hash {at[pos]}) stamped by {item['tsa']} at {when}; "
                     f"signature: openssl ts -verify -digest {digest.hex()} -in {token} "
                     f"-CAfile {item['ca_file']}" + (" -partial_chain" if item.get("partial_chain") else ""))
    return lines


def read_chain(path, wanted, marks=()):
    """Walk ledger.tsv; returns (count, head hash, {pos: (agent, seq, hash, entry)} for
    wanted, {pos: hash} for marks)."""
    prev, expect, found, at = bytes(32), 1, {}, {}
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
            if expect in marks:
                at[expect] = h.hex()
            prev, expect = h, expect + 1
    return expect - 1, prev.hex(), found, at


def check(root):
    claim = json.loads((root / "claim.json").read_text(encoding="utf-8"))
    head = claim.get("ledger_head")
    if not head:
        raise Broken("claim.json has no ledger_head: this claim was not made from a ledger")
    claimed = [o for o in claim.get("outages", []) if o.get("claimed")]
    wanted = {r["ledger_pos"] for o in claimed for r in o.get("records", [])}
    listing = root / "stamps" / "stamps.json"
    marks = {int(i["pos"]) for i in json.loads(listing.read_text(encoding="utf-8"))} \
        if listing.exists() else set()
    count, last, found, at = read_chain(root / "ledger.tsv", wanted, marks)
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
    stamps = check_stamps(root, at, count) if listing.exists() else []
    if wanted and marks and max(wanted) > max(marks):
        stamps.append(f"note: the newest cited record (link {max(wanted)}) is after the last "
                      f"stamp (link {max(marks)}): no stamp vouches for it yet")
    return count, last, n, len(claimed), stamps


def main(argv):
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent
    try:
        count, last, n, outages, stamps = check(root)
    except Broken as e:
        print(f"BROKEN: {e}")
        return 1
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"BROKEN: cannot read the bundle in {root}: {type(e).__name__}: {e}")
        return 1
    print(f"ok: {count} link(s), head {last} matches claim.json; "
          f"{n} record(s) behind {outages} claimed outage(s) are in the chain")
    for line in stamps:
        print(line)
    if not stamps:
        print("no trusted timestamps in this bundle: it proves the chain is intact, not when "
              "it was written")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
'''
