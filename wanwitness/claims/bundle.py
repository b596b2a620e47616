"""The evidence bundle: a zip that anyone can check offline with nothing but Python 3.

    claim.json    the claim, exactly as `wanwitness claim --format json` prints it
    chains/A.tsv  the hash chain of each agent the bundle is for (the claim's), links
                  1..n where n is the agent's head in the claim's checkpoint: link,
                  seq, recv_ms, hash and the entry bytes the hash is computed over
    checkpoint.json
                  the claim's checkpoint: its id, Merkle root, number of leaves, and for
                  each agent in the bundle its head (link, hash), leaf index and
                  inclusion proof (the sibling hashes up to the root)
    outages.csv, tickets.csv, tariff.toml
                  the claim's inputs, for `wanwitness claim --outages ... ` (docs/claims.md)
    stamps/       trusted timestamps (RFC 3161) of the checkpoint's root, when the
                  collector has them (`wanwitness stamp`): stamps.json lists them, N.tsr
                  is each TSA's reply as received, tsa-ca.pem the TSAs' CA certificates
                  ([stamp] tsa_certs) or N-certs.pem the certificates the token carries
    verify.py     recomputes each chain, checks that it ends at the head the checkpoint
                  commits, that the head's inclusion proof leads to the checkpoint's
                  root, that the root is claim.json's, that every record behind a
                  claimed outage is in its chain with its hash, and that each stamp's
                  imprint is the root; exit 0, or 1 naming the agent, link, checkpoint or
                  stamp that breaks
    README.txt    how to check it

Only the agents the bundle is for travel (the claim's, or a line's): on a collector
shared by several households, the others' chains are represented by the sibling
hashes of the inclusion proofs alone, neither their records nor their names. The
checkpoint is the claim's (ledger.covering_checkpoint: the earliest stamped one that
commits its records, else the earliest that does), and the stamps are those of that
checkpoint.
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
import time
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from wanwitness.collector import ledger, stamp
from wanwitness.collector.timeline import iso

from .. import store as s
from ..errors import UserError
from . import build as b
from . import files

CHAIN_HEADER = "link\tseq\trecv_ms\thash\tentry\n"


def _write_chain(conn: sa.Connection, agent: str, n: int, digest: str, out: IO[bytes]) -> None:
    """Stream one agent's chain up to link n, recomputing it on the way: a bundle is
    never made from a broken chain (the claimant would only learn it from the other
    side)."""
    out.write(CHAIN_HEADER.encode())
    prev, expect = ledger.GENESIS, 1
    for link, seq, boot, body, recv, stored in ledger.chain_links(conn, agent, n):
        entry = ledger.entry_bytes(agent, boot, body)
        prev = ledger.link(prev, agent, boot, body, recv)
        if link != expect or prev.hex() != stored:
            raise UserError(f"the ledger is broken at agent {agent} link {expect}; "
                            "run `wanwitness ledger verify`")
        out.write(f"{link}\t{seq}\t{recv}\t{stored}\t".encode() + entry + b"\n")
        expect += 1
    if expect - 1 != n or prev.hex() != digest:
        raise UserError(f"agent {agent}'s chain does not end at link {n} with the hash its checkpoint "
                        "commits; run `wanwitness ledger verify`")


def _token_certs(reply: bytes) -> bytes:
    """The certificates a TSA's token carries, as PEM."""
    import rfc3161_client as tsp
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    certs = tsp.decode_timestamp_response(reply).signed_data.certificates
    return b"".join(x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)
                    for der in sorted(certs))


def _write_stamps(zf: zipfile.ZipFile, chosen: list[stamp.Stamp], cp: ledger.Checkpoint,
                  cas: list[bytes]) -> None:
    listing = []
    for n, st in enumerate(chosen, 1):
        when = iso(st.gen_ms)
        if st.hash != cp.root:
            raise UserError(f"stamp {st.id} by {st.tsa} at {when} contradicts checkpoint {cp.id}: it "
                            f"stamped {st.hash}, the checkpoint's root is {cp.root}; "
                            "run `wanwitness ledger verify`")
        zf.writestr(_entry(f"stamps/{n}.tsr"), st.reply)
        item: dict[str, Any] = {"token": f"stamps/{n}.tsr", "tsa": st.tsa, "checkpoint": cp.id,
                                "root": st.hash, "gen_time": when}
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
   the time in its token, the SHA-256 of the 32 bytes of the checkpoint's root.
   verify.py checks that each token's imprint is that of this root (a chain rebuilt
   after the stamp no longer leads to it, and verify.py names the agent and the
   checkpoint), and prints for each token the OpenSSL command that checks the TSA's
   signature, e.g.

       openssl ts -verify -digest <sha256 of the root> -in stamps/1.tsr -CAfile stamps/tsa-ca.pem

   "Verification: OK" means the TSA signed that value at that time. Check the CA
   certificate (stamps/tsa-ca.pem or stamps/N-certs.pem) against what the TSA publishes.
"""


def _readme(claim: dict[str, Any], command: str, agents: list[str], stamped: bool = False) -> str:
    led = claim["ledger"]
    return f"""wanwitness evidence bundle
==========================

Claim: {claim['rules']['name']}, billing period {claim['period']['label']}, total {claim['total']} {claim['currency']}.
Ledger checkpoint {led['checkpoint']} ({led['made']}), root {led['root']}
Chains: {', '.join(agents)}

1. Check the records (Python 3, nothing else to install):

       python3 verify.py

   Each monitoring agent's records form a hash chain of their own (chains/AGENT.tsv):

       h_0 = 32 zero bytes
       h_n = sha256(h_(n-1) || entry || recv_ms as ASCII digits)

   where entry is the last column of each line, byte for byte. A checkpoint commits
   the newest link (head) of every agent's chain on the collector in one Merkle root
   (RFC 6962 shape: leaf = sha256(0x00 || {{"agent","hash","link"}} as compact sorted
   JSON), node = sha256(0x01 || left || right)); checkpoint.json holds, for each chain
   here, its head and the sibling hashes that lead from it to the root. Other
   households' chains on the same collector are in the root but not in this bundle.

   verify.py recomputes each chain, checks that it ends at the head the checkpoint
   commits and that the head's proof leads to the root written in claim.json (compare
   it with the one in the letter you received), and that every record cited for a
   claimed outage (claim.json: outages[].records) is in its agent's chain at that link
   with that hash. Exit code 0: all good. Exit code 1: it names what breaks.

2. Recompute the amount from the claim's inputs (needs wanwitness):

       {command}

   outages.csv is what `wanwitness outages --csv` printed for these records,
   tickets.csv the fault reports with their linked outages, tariff.toml the tariff.

{STAMPS_README if stamped else ""}
Files: claim.json, chains/ (link, seq, recv_ms, hash, entry; tab-separated, UTF-8),
checkpoint.json, outages.csv, tickets.csv, tariff.toml, verify.py, README.txt{", stamps/" if stamped else ""}.
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


def _checkpoint_doc(cp: ledger.Checkpoint, all_heads: list[tuple[str, int, str]],
                    agents: Iterable[str]) -> dict[str, Any]:
    """checkpoint.json: the checkpoint, and for each of `agents` its head and proof."""
    leaves = [ledger.leaf_hash(a, n, h) for a, n, h in all_heads]
    index = {a: i for i, (a, _, _) in enumerate(all_heads)}
    heads = []
    for agent in sorted(agents):
        i = index[agent]
        _, n, h = all_heads[i]
        heads.append({"agent": agent, "link": n, "hash": h, "index": i,
                      "proof": [p.hex() for p in ledger.inclusion_proof(leaves, i)]})
    return {"checkpoint": cp.id, "root": cp.root, "made": iso(cp.made_ms), "size": len(all_heads),
            "heads": heads}


def write_bundle(path: Path, store: s.Store, claim: dict[str, Any], inputs: b.Inputs,
                 tsa_certs: tuple[str, ...] | list[str] = (),
                 agents: Iterable[str] | None = None) -> None:
    """Write the bundle for a claim built from the store (atomically: temp file, rename):
    the chains of `agents` (default: the claim's, those of its outages) up to the
    claim's checkpoint, that checkpoint with an inclusion proof of each of their heads,
    its stamps and the TSAs' CA certificates (tsa_certs: PEM files) or else those the
    tokens carry. Nothing of any other agent goes in: a claim with outages of an agent
    outside `agents` is refused."""
    led = claim.get("ledger")
    if not led:
        raise UserError("an evidence bundle needs a claim from the store (the bundle carries "
                        "its ledger records); a claim from files has none")
    path = Path(path)
    tz = inputs.tariff.tz
    of_claim = {o["agent"] for o in claim.get("outages", [])}
    wanted = set(agents) if agents is not None else of_claim | set(led.get("heads") or {})
    outside = sorted(of_claim - wanted)
    if outside:
        raise UserError(f"the claim has outages of {', '.join(outside)}, which the evidence bundle "
                        f"is to leave out (it is for {', '.join(sorted(wanted)) or 'no agent'})")
    with store.engine.connect() as conn:
        cp = ledger.get_checkpoint(conn, int(led["checkpoint"]))
        if cp is None or cp.root != led["root"]:
            raise UserError(f"the store has no checkpoint {led['checkpoint']} with root {led['root']}; "
                            "run `wanwitness ledger verify`")
        all_heads = ledger.checkpoint_heads(conn, cp.id)
    # An agent without a link at the checkpoint (a line's new agent) has no chain to ship.
    in_cp = {a: (n, h) for a, n, h in all_heads if a in wanted}
    for agent, head in (led.get("heads") or {}).items():
        if in_cp.get(agent) != (head["link"], head["hash"]):
            raise UserError(f"claim.json's head of {agent} is not the one checkpoint {cp.id} commits")
    doc = _checkpoint_doc(cp, all_heads, in_cp)
    chosen = stamp.stamps(store, checkpoint=cp.id)
    cas = stamp.load_cas(tsa_certs) if chosen else []
    outages = [o for o in inputs.outages if o.agent in wanted]
    try:
        fd, tmp = tempfile.mkstemp(prefix=".wanwitness-bundle-", suffix=".zip", dir=path.parent)
    except OSError as e:
        raise UserError(f"evidence bundle {path}: cannot write it: {e.strerror}") from None
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(_entry("claim.json"), b.to_json(claim))
            with store.engine.connect() as conn:
                for agent, (n, h) in sorted(in_cp.items()):
                    with zf.open(_entry(f"chains/{agent}.tsv"), "w") as out:
                        _write_chain(conn, agent, n, h, out)
            zf.writestr(_entry("checkpoint.json"), json.dumps(doc, indent=2) + "\n")
            if chosen:
                _write_stamps(zf, chosen, cp, cas)
            zf.writestr(_entry("outages.csv"), files.write_outages(outages))
            zf.writestr(_entry("tickets.csv"), files.write_tickets(inputs.tickets, tz))
            zf.writestr(_entry("tariff.toml"), files.write_tariff(
                files.TariffFile(inputs.tariff, inputs.customer, inputs.isp)))
            zf.writestr(_entry("README.txt"), _readme(claim, recompute_command(claim), sorted(in_cp),
                                                      bool(chosen)))
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

Recomputes each agent's hash chain from chains/AGENT.tsv,
    h_0 = 32 zero bytes;  h_n = sha256(h_(n-1) || entry || recv_ms in ASCII digits),
checks that it ends at the head checkpoint.json commits for that agent, that the head's
Merkle inclusion proof leads to the checkpoint's root (leaf = sha256(0x00 || compact
sorted JSON {"agent","hash","link"}), node = sha256(0x01 || left || right), RFC 6962
shape), that the root is claim.json's, and that every record cited for a claimed
outage is in its agent's chain at its link with its hash. With trusted timestamps
(stamps/stamps.json, RFC 3161 tokens): that each token's messageImprint is SHA-256 of
the 32 bytes of the root, and it prints the `openssl ts -verify` command that checks
the TSA's signature. Exit 0 when all is well, 1 naming the agent, link, checkpoint or
stamp that breaks.
"""
import hashlib
import json
import sys
from pathlib import Path

HEADER = b"link\tseq\trecv_ms\thash\tentry\n"


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


def check_stamps(root, cp):
    """Each stamp's imprint against the checkpoint's root; returns the lines to print."""
    listing = json.loads((root / "stamps" / "stamps.json").read_text(encoding="utf-8"))
    lines = []
    want = hashlib.sha256(bytes.fromhex(cp["root"])).digest()
    for item in listing:
        token = item["token"]
        try:
            alg, hashed, when = read_token((root / token).read_bytes())
        except ValueError as e:
            raise Broken(f"{token}: not a readable RFC 3161 timestamp reply: {e}")
        name = f"stamp {token} by {item['tsa']} at {when} (checkpoint {item['checkpoint']})"
        if alg != OID_SHA256:
            raise Broken(f"{name}: its imprint is not SHA-256")
        if item["checkpoint"] != cp["checkpoint"] or hashed != want:
            raise Broken(f"{name} contradicts checkpoint {cp['checkpoint']}: the TSA stamped a value "
                         f"whose SHA-256 is {hashed.hex()}, this checkpoint's root {cp['root']} has "
                         f"SHA-256 {want.hex()}: the chains or the checkpoint were rebuilt after "
                         "the stamp")
        lines.append(f"stamp: checkpoint {cp['checkpoint']} (root {cp['root']}) stamped by "
                     f"{item['tsa']} at {when}; signature: openssl ts -verify -digest {want.hex()} "
                     f"-in {token} -CAfile {item['ca_file']}"
                     + (" -partial_chain" if item.get("partial_chain") else ""))
    return lines


def read_chain(path, agent):
    """Walk one agent's chain file; returns (count, head hash, {link: (seq, hash, record)})."""
    prev, expect, links = bytes(32), 1, {}
    with open(path, "rb") as f:
        if f.readline() != HEADER:
            raise Broken(f"{path.name}: not a wanwitness chain export (bad header line)")
        for line in f:
            if not line.endswith(b"\n"):
                raise Broken(f"{path.name}: the last line is cut off")
            parts = line[:-1].split(b"\t", 4)
            if len(parts) != 5 or not parts[0].isdigit() or not parts[2].isdigit():
                raise Broken(f"agent {agent} link {expect}: malformed line")
            n, seq, recv, digest, entry = parts
            seq = seq.decode("ascii", "replace")
            where = f"agent {agent} link {int(n)} (seq {seq})"
            if int(n) != expect:
                raise Broken(f"agent {agent} link {expect} is missing (next line is link {int(n)})")
            h = hashlib.sha256(prev + entry + recv).digest()
            if h.hex() != digest.decode("ascii", "replace"):
                raise Broken(f"{where}: hash mismatch (record edited, replaced or reordered)")
            try:
                doc = json.loads(entry.decode("utf-8"))
                ok = doc["agent"] == agent and str(doc["rec"]["seq"]) == seq
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                raise Broken(f"{where}: the record is not agent {agent}'s seq {seq}")
            links[expect] = (int(seq), h.hex(), doc)
            prev, expect = h, expect + 1
    return expect - 1, prev.hex(), links


def split(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def root_from_proof(leaf, index, size, path):
    """The Merkle root that leaf number `index` of `size` leaves and its proof (sibling
    hashes, lowest first) lead to."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} of a tree of {size}")
    if size == 1:
        if path:
            raise ValueError("the proof is longer than the tree is deep")
        return leaf
    if not path:
        raise ValueError("the proof is shorter than the tree is deep")
    k = split(size)
    if index < k:
        return hashlib.sha256(b"\x01" + root_from_proof(leaf, index, k, path[:-1]) + path[-1]).digest()
    return hashlib.sha256(b"\x01" + path[-1] + root_from_proof(leaf, index - k, size - k, path[:-1])).digest()


def check(root):
    claim = json.loads((root / "claim.json").read_text(encoding="utf-8"))
    led = claim.get("ledger")
    if not led:
        raise Broken("claim.json has no ledger checkpoint: this claim was not made from a ledger")
    cp = json.loads((root / "checkpoint.json").read_text(encoding="utf-8"))
    name = f"checkpoint {cp['checkpoint']}"
    if (cp["checkpoint"], cp["root"]) != (led["checkpoint"], led["root"]):
        raise Broken(f"checkpoint.json is checkpoint {cp['checkpoint']} with root {cp['root']}, but "
                     f"claim.json's is checkpoint {led['checkpoint']} with root {led['root']}")
    chains = {}
    files = {p.name for p in (root / "chains").iterdir()} if (root / "chains").is_dir() else set()
    for head in cp["heads"]:
        agent = head["agent"]
        fname = f"{agent}.tsv"
        if fname not in files:
            raise Broken(f"{name} names agent {agent}, whose chain (chains/{fname}) is not in the bundle")
        files.discard(fname)
        count, last, links = read_chain(root / "chains" / fname, agent)
        if (count, last) != (head["link"], head["hash"]):
            raise Broken(f"agent {agent}: the chain ends at link {count} with hash {last}, but {name} "
                         f"commits its link {head['link']} with hash {head['hash']} (the chain was "
                         "rebuilt or cut after the checkpoint)")
        leaf = hashlib.sha256(b"\x00" + json.dumps(
            {"agent": agent, "hash": head["hash"], "link": head["link"]}, sort_keys=True,
            separators=(",", ":"), ensure_ascii=False).encode("utf-8")).digest()
        try:
            got = root_from_proof(leaf, head["index"], cp["size"], [bytes.fromhex(p) for p in head["proof"]])
        except ValueError as e:
            raise Broken(f"agent {agent}: the inclusion proof of its head in {name} is malformed: {e}")
        if got.hex() != cp["root"]:
            raise Broken(f"agent {agent}: its head (link {head['link']}) does not lead to the root of "
                         f"{name} (the proof gives {got.hex()}, the root is {cp['root']})")
        chains[agent] = (count, links)
    if files:
        raise Broken(f"chains/{sorted(files)[0]} is not committed in {name}")
    for agent, head in (led.get("heads") or {}).items():
        if agent not in chains or chains[agent][0] != head["link"]:
            raise Broken(f"claim.json names agent {agent}'s head at link {head['link']}, "
                         f"which the bundle's {name} does not hold")
    claimed = [o for o in claim.get("outages", []) if o.get("claimed")]
    n = 0
    for o in claimed:
        if not o.get("records"):
            raise Broken(f"claimed outage {o['id']} cites no ledger record")
        if o["agent"] not in chains:
            raise Broken(f"claimed outage {o['id']}: the chain of agent {o['agent']} is not in the bundle")
        links = chains[o["agent"]][1]
        for r in o["records"]:
            where = f"outage {o['id']}: record {o['agent']} seq {r['seq']} at link {r['link']}"
            got = links.get(r["link"])
            if got is None:
                raise Broken(f"{where}: agent {o['agent']}'s chain has no such link")
            seq, digest, doc = got
            if (seq, digest) != (r["seq"], r["hash"]):
                raise Broken(f"{where}: the chain holds seq {seq} with hash {digest} there")
            rec = doc["rec"]
            if r.get("role") == "open" and (rec.get("k") != "state" or rec.get("s") != o["class"]
                                            or doc["boot"] != o["evidence"].get("boot")):
                raise Broken(f"{where}: not the state record that opened a {o['class']} outage")
            n += 1
    listing = root / "stamps" / "stamps.json"
    stamps = check_stamps(root, cp) if listing.exists() else []
    summary = ", ".join(f"{a} ({c} links)" for a, (c, _) in sorted(chains.items()))
    return summary, cp, n, len(claimed), stamps


def main(argv):
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent
    try:
        summary, cp, n, outages, stamps = check(root)
    except Broken as e:
        print(f"BROKEN: {e}")
        return 1
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"BROKEN: cannot read the bundle in {root}: {type(e).__name__}: {e}")
        return 1
    print(f"ok: chains {summary} end at the heads checkpoint {cp['checkpoint']} commits, whose "
          f"inclusion proofs lead to its root {cp['root']} (claim.json's); {n} record(s) behind "
          f"{outages} claimed outage(s) are in the chains")
    for line in stamps:
        print(line)
    if not stamps:
        print("no trusted timestamps in this bundle: it proves the chains are intact, not when "
              "they were written")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
'''
