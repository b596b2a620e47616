"""Trusted timestamps of ledger checkpoints (RFC 3161).

The hash chains prove nothing against their owner, who could rebuild them from edited
records. A time-stamping authority (TSA) signs that a value existed at a time; what
the collector stamps is the root of a checkpoint (collector/ledger.py), which commits
every agent's chain head:

    data            = the 32 bytes of the checkpoint's Merkle root
    messageImprint  = SHA-256(data)  (hashAlgorithm id-sha256)

so `openssl ts -verify -digest <sha256(root) in hex>` checks a token against it. The
token's genTime, signed by the TSA, says that every agent's chain up to its head in
that checkpoint existed at that time: a chain rebuilt afterwards has another head, no
inclusion proof leads from it to the stamped root, and the token contradicts it. One
stamp covers all agents. (Stamps made before migration 11 stamped the single chain's
head, link `pos`; `ledger.verify` still checks them.)

Each stamp is one TimeStampReq (with a nonce) POSTed as application/timestamp-query;
the reply must be granted, carry our imprint and nonce and, when [stamp] tsa_certs is
set, a signature that verifies up to one of those CA certificates. Only then is the
whole TimeStampResp stored (table `stamps`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from wanwitness import store as s
from wanwitness.errors import UserError

log = logging.getLogger("wanwitness.stamp")

MAX_REPLY = 1 << 20


class StampError(UserError):
    """A TSA that did not give a good token (exit 1: not the user's typing)."""

    exit_code = 1


def check_url(url: str) -> str:
    """A TSA URL must be http:// or https:// with a host; returns it, or ValueError."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not a TSA URL (http:// or https:// with a host): {url!r}")
    return url


def imprint(head_hash: str) -> bytes:
    """SHA-256 of the 32 bytes of a stamped hash (a checkpoint root): what a token's
    messageImprint holds."""
    return hashlib.sha256(bytes.fromhex(head_hash)).digest()


@dataclass(frozen=True)
class Stamp:
    id: int
    pos: int        # the checkpoint's id (before migration 11: a link of the single chain)
    hash: str       # the stamped value: the checkpoint's root
    tsa: str
    gen_ms: int
    reply: bytes
    checkpoint: int | None = None  # None: a stamp of the old single chain


def load_cas(paths: tuple[str, ...] | list[str]) -> list[bytes]:
    """The PEM certificates in these files, each as its own PEM block (bytes)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    out: list[bytes] = []
    for p in paths:
        try:
            data = Path(p).expanduser().read_bytes()
        except OSError as e:
            raise UserError(f"TSA certificate file {p}: cannot read it: {e.strerror}") from None
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError:
            raise UserError(f"TSA certificate file {p}: no PEM certificate in it") from None
        out.extend(c.public_bytes(Encoding.PEM) for c in certs)
    return out


def request_token(url: str, head_hash: str, cas: list[bytes], timeout: float) -> tuple[bytes, int]:
    """Ask one TSA to stamp the head hash; returns (the DER TimeStampResp, genTime ms).
    StampError with one line when the TSA is unreachable or its reply is not right."""
    import rfc3161_client as tsp
    from cryptography import x509

    req = (tsp.TimestampRequestBuilder().data(bytes.fromhex(head_hash))
           .hash_algorithm(tsp.HashAlgorithm.SHA256).nonce(nonce=True).cert_request(cert_request=True)
           .build())
    http = urllib.request.Request(url, data=req.as_bytes(), method="POST",
                                  headers={"Content-Type": "application/timestamp-query",
                                           "Accept": "application/timestamp-reply"})
    try:
        with urllib.request.urlopen(http, timeout=timeout) as answer:
            body = answer.read(MAX_REPLY + 1)
    except urllib.error.HTTPError as e:
        raise StampError(f"TSA {url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise StampError(f"TSA {url}: unreachable: {e.reason}") from None
    except (OSError, ValueError) as e:  # timeouts, resets, a malformed URL
        raise StampError(f"TSA {url}: {type(e).__name__}: {e}") from None
    if len(body) > MAX_REPLY:
        raise StampError(f"TSA {url}: the reply is larger than {MAX_REPLY} bytes")
    try:
        resp = tsp.decode_timestamp_response(body)
    except ValueError as e:
        raise StampError(f"TSA {url}: not a timestamp reply ({e})") from None
    if resp.status not in (tsp.PKIStatus.GRANTED, tsp.PKIStatus.GRANTED_WITH_MODS):
        why = "; ".join(resp.status_string) or "no reason given"
        raise StampError(f"TSA {url}: refused (status {resp.status}: {why})")
    info = resp.tst_info
    sha256_oid = x509.ObjectIdentifier("2.16.840.1.101.3.4.2.1")
    if info.message_imprint.hash_algorithm != sha256_oid or info.message_imprint.message != imprint(head_hash):
        raise StampError(f"TSA {url}: the token stamps another imprint than the checkpoint root's")
    if info.nonce != req.nonce:
        raise StampError(f"TSA {url}: the token's nonce is not the request's (a replayed reply?)")
    if cas:
        builder = tsp.VerifierBuilder.from_request(req)
        for pem in cas:
            builder = builder.add_root_certificate(x509.load_pem_x509_certificate(pem))
        try:
            builder.build().verify_message(resp, bytes.fromhex(head_hash))
        except tsp.VerificationError as e:
            raise StampError(f"TSA {url}: the token's signature does not verify with "
                             f"[stamp] tsa_certs: {e}") from None
    gen = info.gen_time
    if gen.tzinfo is None:
        gen = gen.replace(tzinfo=dt.UTC)
    return body, int(gen.timestamp() * 1000)


def stamp(store: s.Store, urls: list[str] | tuple[str, ...], cas: list[bytes],
          timeout: float = 30) -> tuple[list[Stamp], list[str]]:
    """Stamp a checkpoint of every agent's head now (a new one when records came since
    the newest) with each TSA; stores each good token. Returns (the stamps stored, one
    error line per TSA that gave none)."""
    from wanwitness.collector import ledger
    if not urls:
        raise UserError("no TSA: set [stamp] tsa_urls in the config or pass --tsa URL "
                        "(README, \"Trusted timestamps\")")
    cp, _made = ledger.make_checkpoint(store)
    if cp is None:
        raise UserError("the ledger is empty: nothing to stamp yet")
    done: list[Stamp] = []
    errors: list[str] = []
    for url in urls:
        try:
            reply, gen_ms = request_token(url, cp.root, cas, timeout)
        except StampError as e:
            errors.append(str(e))
            continue
        with store.engine.begin() as conn:
            key = conn.execute(s.stamps.insert().values(
                pos=cp.id, hash=cp.root, tsa=url, gen_ms=gen_ms, reply=reply,
                created_ms=s.now_ms(), checkpoint=cp.id)).inserted_primary_key
        row_id = key[0] if key else 0
        done.append(Stamp(int(row_id), cp.id, cp.root, url, gen_ms, reply, cp.id))
    return done, errors


def stamps(store: s.Store, checkpoint: int | None = None) -> list[Stamp]:
    """The stored stamps of checkpoints (of this one only, when given), oldest first;
    the old single chain's are left out (ledger.verify checks them)."""
    S = s.stamps
    q = (sa.select(S.c.id, S.c.pos, S.c.hash, S.c.tsa, S.c.gen_ms, S.c.reply, S.c.checkpoint)
         .where(S.c.checkpoint.is_not(None)).order_by(S.c.checkpoint, S.c.id))
    if checkpoint is not None:
        q = q.where(S.c.checkpoint == checkpoint)
    with store.engine.connect() as conn:
        return [Stamp(r.id, r.pos, r.hash, r.tsa, r.gen_ms, bytes(r.reply), r.checkpoint)
                for r in conn.execute(q)]


class DailyStamper:
    """`collect`'s stamps: a checkpoint, at most every interval_s and only when new
    records came since the last stamp; after a failure, again after retry_s. Its own thread: a
    slow TSA never holds up ingest. The schedule is read from the store (the newest
    stamp's time), so a restart neither stamps again nor waits a day."""

    def __init__(self, store: s.Store, urls: tuple[str, ...], cas: list[bytes], timeout: float,
                 interval_s: int, retry_s: int):
        self.store, self.urls, self.cas, self.timeout = store, urls, cas, timeout
        self.interval_s, self.retry_s = interval_s, retry_s
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, name="wanwitness-stamp", daemon=True)

    @classmethod
    def from_config(cls, store: s.Store, conf) -> DailyStamper | None:
        """The stamper [stamp] asks for, or None when it has no tsa_urls."""
        c = conf.stamp
        if not c.tsa_urls:
            return None
        return cls(store, c.tsa_urls, load_cas(c.tsa_certs), c.timeout_s, c.interval_s, c.retry_s)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=self.timeout + 5)

    def due_in_s(self) -> float:
        """Seconds until the next stamp is due (0: now), from what the store holds."""
        S, C = s.stamps, s.checkpoints
        with self.store.engine.connect() as conn:
            links = conn.execute(sa.select(sa.func.sum(s.agents.c.chain_n))).scalar()
            last = conn.execute(sa.select(C.c.links, S.c.created_ms)
                                .select_from(S.outerjoin(C, C.c.id == S.c.checkpoint))
                                .order_by(S.c.id.desc()).limit(1)).first()
        if not links:
            return float(self.interval_s)
        if last is None:
            return 0.0
        if last.links is not None and int(last.links) >= int(links):  # nothing new: look again after retry_s
            return float(min(self.interval_s, self.retry_s))
        return max(0.0, (int(last.created_ms) + self.interval_s * 1000 - s.now_ms()) / 1000)

    def round(self) -> float:
        """One check: stamps when due; returns the seconds to wait before the next."""
        try:
            wait = self.due_in_s()
            if wait > 0:
                return min(wait, self.interval_s)
            done, errors = stamp(self.store, self.urls, self.cas, self.timeout)
        except Exception as e:  # the store or a TSA: logged, tried again later
            log.warning("stamp: %s", e)
            return self.retry_s
        for st in done:
            log.info("stamped checkpoint %d (root %s) with %s", st.pos, st.hash, st.tsa)
        for line in errors:
            log.warning("stamp: %s", line)
        return self.retry_s if errors and not done else self.interval_s

    def run(self) -> None:
        while not self.stopping.is_set():
            self.stopping.wait(self.round())
