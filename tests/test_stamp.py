"""Trusted timestamps (RFC 3161) of the ledger head, against a local TSA on loopback
(`openssl ts -reply` behind an HTTP handler, testing/tsa.py): `wanwitness stamp`, its
errors, the stored token checked by `openssl ts -verify`, and `collect`'s daily stamper."""

from __future__ import annotations

import hashlib
import subprocess

import pytest
import sqlalchemy as sa

from testing.tsa import LocalTsa
from tests.test_claims_build import october, write_config
from wanwitness import store as s
from wanwitness.collector import stamp as st
from wanwitness.store import open_store


@pytest.fixture(scope="module")
def tsa(tmp_path_factory):
    t = LocalTsa(tmp_path_factory.mktemp("tsa"))
    yield t
    t.stop()


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
    store = open_store(db_url)
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(s.ledger_head.c.pos, s.ledger_head.c.hash)).one()
    store.dispose()
    return row.pos, row.hash


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


def test_stamp_stores_a_token_of_the_head_that_openssl_verifies(ledger_db, tmp_path, ww, tsa_ok):
    conf = stamp_config(tmp_path, tsa_ok)
    proc = ww("--config", str(conf), "stamp", "--db", ledger_db)
    assert proc.returncode == 0, proc.stderr
    pos, digest = head(ledger_db)
    [one] = stored(ledger_db)
    assert (one.pos, one.hash, one.tsa) == (pos, digest, tsa_ok.url)
    assert proc.stdout.startswith(f"stamped link {pos} (head {digest}) by {tsa_ok.url} at ")
    # The token stamps SHA-256 of the head hash's 32 bytes, signed by the TSA.
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
