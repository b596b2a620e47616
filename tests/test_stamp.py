"""Trusted timestamps (RFC 3161) of the ledger head, against a local TSA on loopback
(`openssl ts -reply` behind an HTTP handler, testing/tsa.py): `wanwitness stamp`, its
errors, the stored token checked by `openssl ts -verify`, and `collect`'s daily stamper."""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
from pathlib import Path

import pytest

from testing.records import Board
from testing.tsa import LocalTsa
from tests.test_claims_build import october, write_config
from tests.test_claims_bundle import BUNDLE_FILES, make_bundle, rewrite_chain, verify
from wanwitness import store as s
from wanwitness.collector import ledger
from wanwitness.collector import stamp as st
from wanwitness.collector.agents import add_agent
from wanwitness.collector.ingest import Ingestor
from wanwitness.collector.timeline import iso
from wanwitness.store import open_store


@pytest.fixture
def tsa_ok(tsa):
    tsa.mode = "ok"
    yield tsa
    tsa.mode = "ok"


def stamp_config(tmp_path, tsa: LocalTsa, urls: list[str] | None = None):
    urls = [tsa.url] if urls is None else urls
    listed = ", ".join(f'"{u}"' for u in urls)
    return write_config(tmp_path / "config.toml",
                        f'\n[stamp]\ntsa_urls = [{listed}]\ntsa_certs = ["{tsa.ca_pem}"]\ntimeout_s = 5\n')


def head(db_url: str) -> tuple[int, str]:
    """The newest checkpoint: (its id, its root)."""
    store = open_store(db_url)
    with store.engine.connect() as conn:
        cp = ledger.latest_checkpoint(conn)
    store.dispose()
    assert cp is not None
    return cp.id, cp.root


def stored(db_url: str) -> list[st.Stamp]:
    store = open_store(db_url)
    try:
        return st.stamps(store)
    finally:
        store.dispose()


@pytest.fixture
def ledger_db(db_url):
    store = open_store(db_url)
    october(store)
    store.dispose()
    return db_url


def test_stamp_stores_a_token_of_a_checkpoint_that_openssl_verifies(ledger_db, tmp_path, ww, tsa_ok):
    conf = stamp_config(tmp_path, tsa_ok)
    proc = ww("--config", str(conf), "stamp", "--db", ledger_db)
    assert proc.returncode == 0, proc.stderr
    pos, digest = head(ledger_db)
    [one] = stored(ledger_db)
    assert (one.pos, one.checkpoint, one.hash, one.tsa) == (pos, pos, digest, tsa_ok.url)
    assert proc.stdout.startswith(f"stamped checkpoint {pos} (root {digest}) by {tsa_ok.url} at ")
    # The token stamps SHA-256 of the checkpoint root's 32 bytes, signed by the TSA.
    (tmp_path / "token.tsr").write_bytes(one.reply)
    check = subprocess.run(["openssl", "ts", "-verify", "-digest",
                            hashlib.sha256(bytes.fromhex(digest)).hexdigest(), "-in", "token.tsr",
                            "-CAfile", str(tsa_ok.ca_pem)], cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0 and "Verification: OK" in check.stdout, check.stderr


@pytest.mark.parametrize("mode, words", [("garbage", "not a timestamp reply"),
                                         ("http500", "HTTP 500")])
def test_a_bad_reply_is_one_line_and_nothing_is_stored(ledger_db, tmp_path, ww, tsa, mode, words):
    conf = stamp_config(tmp_path, tsa)
    tsa.mode = mode
    try:
        proc = ww("--config", str(conf), "stamp", "--db", ledger_db)
    finally:
        tsa.mode = "ok"
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith(f"NOT stamped: TSA {tsa.url}: ") and words in lines[0]
    assert lines[1] == "wanwitness: 1 of 1 TSA(s) gave no token; nothing stored"
    assert "Traceback" not in proc.stderr and stored(ledger_db) == []


def test_a_tsa_that_is_down_and_a_bad_url(sqlite_url, tmp_path, ww, tsa_ok):
    store = open_store(sqlite_url)
    october(store)
    store.dispose()
    conf = stamp_config(tmp_path, tsa_ok)
    down = "http://127.0.0.1:9/tsr"  # discard port: nothing listens
    proc = ww("--config", str(conf), "stamp", "--db", sqlite_url, "--tsa", down, "--tsa", tsa_ok.url)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"NOT stamped: TSA {down}: unreachable: [Errno 111] Connection refused",
                                        "wanwitness: 1 of 2 TSA(s) gave no token"]
    assert [x.tsa for x in stored(sqlite_url)] == [tsa_ok.url]  # the one that answered

    proc = ww("--config", str(conf), "stamp", "--db", sqlite_url, "--tsa", "ftp://example/tsr")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("wanwitness: --tsa: not a TSA URL (http:// or https:// with a "
                                   "host): 'ftp://example/tsr'")


def test_a_token_signed_by_another_ca_is_refused(sqlite_url, tmp_path, ww, tsa_ok, tmp_path_factory):
    store = open_store(sqlite_url)
    october(store)
    store.dispose()
    other = LocalTsa(tmp_path_factory.mktemp("other-tsa"))
    try:
        conf = stamp_config(tmp_path, tsa_ok, urls=[other.url])  # trusts only tsa_ok's CA
        proc = ww("--config", str(conf), "stamp", "--db", sqlite_url)
    finally:
        other.stop()
    assert proc.returncode == 1
    assert "the token's signature does not verify with [stamp] tsa_certs" in proc.stderr
    assert stored(sqlite_url) == []


def test_an_empty_ledger_and_no_tsa(sqlite_url, tmp_path, ww, tsa_ok):
    open_store(sqlite_url).dispose()
    conf = stamp_config(tmp_path, tsa_ok)
    proc = ww("--config", str(conf), "stamp", "--db", sqlite_url)
    assert proc.returncode == 2 and proc.stderr.strip() == "wanwitness: the ledger is empty: nothing to stamp yet"
    proc = ww("--config", str(write_config(tmp_path / "bare.toml")), "stamp", "--db", sqlite_url)
    assert proc.returncode == 2 and "no TSA: set [stamp] tsa_urls" in proc.stderr


# --- the evidence bundle with its stamps ------------------------------------------------

def claim_bundle(ww, conf: Path, db_url: str, tmp_path: Path) -> tuple[Path, dict]:
    folder, claim, names = make_bundle(ww, conf, db_url, tmp_path)
    assert BUNDLE_FILES < names and "stamps/stamps.json" in names
    return folder, claim


def openssl_commands(stdout: str) -> list[str]:
    return [line.split("signature: ", 1)[1] for line in stdout.splitlines()
            if line.startswith("stamp: ")]


@pytest.mark.parametrize("with_ca", [True, False], ids=["tsa_certs", "token-certs"])
def test_a_stamped_bundle_verifies_offline_and_with_openssl(ledger_db, tmp_path, ww, tsa_ok, with_ca):
    conf = stamp_config(tmp_path, tsa_ok)
    assert ww("--config", str(conf), "stamp", "--db", ledger_db).returncode == 0
    if not with_ca:  # the bundle then carries the certificate inside the token
        conf = write_config(tmp_path / "config.toml")
    folder, claim = claim_bundle(ww, conf, ledger_db, tmp_path)
    pos, digest = head(ledger_db)
    listing = json.loads((folder / "stamps" / "stamps.json").read_text())
    assert [(i["token"], i["checkpoint"], i["root"], i["tsa"]) for i in listing] == \
        [("stamps/1.tsr", pos, digest, tsa_ok.url)]
    assert (claim["ledger"]["checkpoint"], claim["ledger"]["root"]) == (pos, digest)
    proc = verify(folder)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok: chains home (") and f"root {digest} (claim.json's)" in proc.stdout
    [command] = openssl_commands(proc.stdout)
    imprint = hashlib.sha256(bytes.fromhex(digest)).hexdigest()
    ca = "stamps/tsa-ca.pem" if with_ca else "stamps/1-certs.pem -partial_chain"
    assert command == f"openssl ts -verify -digest {imprint} -in stamps/1.tsr -CAfile {ca}"
    check = subprocess.run(shlex.split(command), cwd=folder, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "Verification: OK" in check.stdout, check.stderr


def rebuild_chain(folder: Path, claim: dict, link: int) -> None:
    """What an owner who edits a record must do for the bundle to verify: flip one digit
    of the record at `link`, recompute every hash from there, the checkpoint's head and
    root, and fix claim.json."""
    hashes = rewrite_chain(folder, link)
    cp = json.loads((folder / "checkpoint.json").read_text())
    [h] = cp["heads"]
    h["hash"] = hashes[h["link"]]
    cp["root"] = ledger.root_from_proof(ledger.leaf_hash("home", h["link"], h["hash"]), h["index"],
                                        cp["size"], [bytes.fromhex(p) for p in h["proof"]]).hex()
    (folder / "checkpoint.json").write_text(json.dumps(cp))
    claim["ledger"]["root"] = cp["root"]
    claim["ledger"]["heads"]["home"]["hash"] = h["hash"]
    for o in claim["outages"]:
        for r in o["records"]:
            r["hash"] = hashes[r["link"]]
    (folder / "claim.json").write_text(json.dumps(claim))


def test_a_chain_rebuilt_after_the_stamp_fails_naming_the_stamp(ledger_db, tmp_path, ww, tsa_ok):
    conf = stamp_config(tmp_path, tsa_ok)
    assert ww("--config", str(conf), "stamp", "--db", ledger_db).returncode == 0
    folder, claim = claim_bundle(ww, conf, ledger_db, tmp_path)
    pos, digest = head(ledger_db)
    [one] = stored(ledger_db)
    opening = claim["outages"][0]["records"][0]
    rebuild_chain(folder, claim, opening["link"])
    # Without the stamp this would pass: the chain, the checkpoint and the citations agree.
    (folder / "stamps").rename(tmp_path / "stamps-aside")
    assert verify(folder).returncode == 0
    (tmp_path / "stamps-aside").rename(folder / "stamps")
    proc = verify(folder)
    assert proc.returncode == 1
    when = iso(one.gen_ms)[:19]  # the token's genTime: whole seconds from openssl
    line = proc.stdout.strip()
    assert line.startswith(f"BROKEN: stamp stamps/1.tsr by {tsa_ok.url} at {when}")
    assert f"(checkpoint {pos}) contradicts checkpoint {pos}: " in line
    assert f"this checkpoint's root {claim['ledger']['root']} has" in line
    assert line.endswith("the chains or the checkpoint were rebuilt after the stamp")
    assert claim["ledger"]["root"] != digest


# --- collect's daily stamp --------------------------------------------------------------

def test_the_daily_stamper_stamps_new_records_once_and_retries_a_tsa_that_is_down(store, tsa_ok):
    october(store)
    down = st.DailyStamper(store, ("http://127.0.0.1:9/tsr",), [], 5, interval_s=86400, retry_s=900)
    assert down.due_in_s() == 0
    assert down.round() == 900 and st.stamps(store) == []  # unreachable: again in retry_s
    cas = st.load_cas([str(tsa_ok.ca_pem)])
    daily = st.DailyStamper(store, (tsa_ok.url,), cas, 5, interval_s=86400, retry_s=900)
    assert daily.round() == 86400
    [first] = st.stamps(store)
    with store.engine.connect() as conn:
        cp = ledger.latest_checkpoint(conn)
        assert cp is not None and (first.pos, first.checkpoint, first.hash) == (cp.id, cp.id, cp.root)
    requests = tsa_ok.requests
    assert daily.round() == 900 and tsa_ok.requests == requests  # nothing new: no stamp
    add_agent(store, "office")
    Board(Ingestor(store), "office").start(1, s.now_ms())  # a new record ...
    assert 899 < daily.due_in_s() <= 86400  # ... waits for the day to be over
    with store.engine.begin() as conn:  # which it is now
        conn.execute(s.stamps.update().values(created_ms=s.now_ms() - 86400_000 - 1))
    assert daily.due_in_s() == 0
    assert daily.round() == 86400
    assert [x.pos for x in st.stamps(store)] == [first.pos, first.pos + 1]


def test_collect_starts_the_stamper_only_with_tsa_urls(tmp_path, tsa_ok):
    from wanwitness import config as cfg
    store = open_store(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        assert st.DailyStamper.from_config(store, cfg.load(write_config(tmp_path / "bare.toml"))) is None
        stamper = st.DailyStamper.from_config(store, cfg.load(stamp_config(tmp_path, tsa_ok)))
        assert stamper is not None and stamper.urls == (tsa_ok.url,) and len(stamper.cas) == 1
        assert (stamper.interval_s, stamper.retry_s, stamper.timeout) == (86400, 900, 5)
    finally:
        store.dispose()


def test_no_bundle_when_a_stored_stamp_contradicts_the_ledger(sqlite_url, tmp_path, ww, tsa_ok):
    store = open_store(sqlite_url)
    october(store)
    store.dispose()
    conf = stamp_config(tmp_path, tsa_ok)
    assert ww("--config", str(conf), "stamp", "--db", sqlite_url).returncode == 0
    store = open_store(sqlite_url)
    with store.engine.begin() as conn:
        conn.execute(s.stamps.update().values(hash="0" * 64))
    store.dispose()
    [one] = stored(sqlite_url)
    proc = ww("--config", str(conf), "claim", "--db", sqlite_url, "--period", "2026-10",
              "--rules", "pro-rata", "--out", str(tmp_path / "claim.json"),
              "--evidence", str(tmp_path / "evidence.zip"))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(
        f"wanwitness: stamp {one.id} by {tsa_ok.url} at {iso(one.gen_ms)} contradicts checkpoint "
        f"{one.checkpoint}: it stamped {'0' * 64}, the checkpoint's root is ")
    assert not (tmp_path / "evidence.zip").exists() and not (tmp_path / "claim.json").exists()


def test_config_show_lists_the_tsas_without_their_passwords(ww, tmp_path):
    conf = tmp_path / "config.toml"
    conf.write_text('[stamp]\ntsa_urls = ["http://user:s3cretpw@127.0.0.1:9/tsa", "http://127.0.0.1:9/b"]\n')
    shown = ww("--config", str(conf), "config", "show")
    assert shown.returncode == 0, shown.stderr
    assert "tsa_urls = ['http://****@127.0.0.1:9/tsa', 'http://127.0.0.1:9/b']" in shown.stdout
    assert "s3cretpw" not in shown.stdout
