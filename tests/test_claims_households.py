"""Evidence for one household (issue 17): two households' agents on one collector; the
bundle for one carries nothing of the other and still verifies, with and without a
trusted timestamp, and a tampered record or a rebuilt chain fails naming what it
contradicts."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from testing.records import Board
from tests.test_claims_build import NOW, at, october, write_config
from tests.test_claims_bundle import rewrite_chain, verify
from wanwitness import config as cfg
from wanwitness import store as s
from wanwitness.claims import build as b
from wanwitness.claims import link
from wanwitness.claims import tickets as tk
from wanwitness.claims.bundle import write_bundle
from wanwitness.collector import ledger
from wanwitness.collector import stamp as st
from wanwitness.collector.agents import add_agent
from wanwitness.collector.ingest import Ingestor
from wanwitness.errors import UserError
from wanwitness.store import open_store

OTHER = "flat"  # the other household's agent


@pytest.fixture
def shared(db_url):
    """October for `home` and, on the same collector, outages of another household's
    agent `flat` at the same times."""
    store = open_store(db_url)
    october(store)
    add_agent(store, OTHER, hb_s=30)
    flat = Board(Ingestor(store), OTHER)
    flat.start(1, at("2026-09-28T00:00:00+00:00"))
    flat.state("isp_down", at("2026-10-03T09:00:00+00:00"), ev={"anchors": {"ok": 0, "of": 3}})
    flat.state("up", at("2026-10-03T11:00:00+00:00"))
    flat.state("isp_down", at("2026-10-25T01:00:00+00:00"))
    flat.state("up", at("2026-10-25T04:00:00+00:00"))
    yield store
    store.dispose()


def home_claim(store: s.Store, conf: cfg.Config) -> tuple[dict, b.Inputs]:
    """October's claim of the `home` household: what a claim for its line gives."""
    full = b.from_store(store, conf, "2026-10", now=NOW)
    mine = [o for o in full.outages if o.agent == "home"]
    inputs = replace(full, outages=mine, tickets=link.link(tk.list_all(store), mine, tk.overrides(store)))
    pack = b.load_pack("pro-rata")
    return b.build(inputs, pack, pack.parse_options({})), inputs


def other_household(store: s.Store) -> list[bytes]:
    """What must not travel: the other agent's name, its records (as chained: the entry
    with its agent; a body alone can equal one of home's, a boot record at the same
    time) and its link hashes."""
    R = s.records
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(R.c.boot, R.c.body, R.c.hash).where(R.c.agent == OTHER)).all()
    assert len(rows) == 5
    return ([OTHER.encode()] + [ledger.entry_bytes(OTHER, r.boot, r.body) for r in rows]
            + [r.hash.encode() for r in rows])


def unzip(path: Path, folder: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        zf.extractall(folder)
        return {name: zf.read(name) for name in zf.namelist()}


def test_the_bundle_for_one_household_has_nothing_of_the_other_and_verifies(shared, tmp_path):
    conf = cfg.load(write_config(tmp_path / "config.toml"))
    claim, inputs = home_claim(shared, conf)
    assert set(claim["ledger"]["heads"]) == {"home"}
    write_bundle(tmp_path / "home.zip", shared, claim, inputs, agents={"home"})
    files = unzip(tmp_path / "home.zip", tmp_path / "home")
    assert "chains/home.tsv" in files and not any(n.startswith(f"chains/{OTHER}") for n in files)
    for needle in other_household(shared):
        leaks = [name for name, data in files.items() if needle in data]
        assert leaks == [], f"{needle[:40]!r} is in {leaks}"
    # the checkpoint commits both households' heads: the proof's sibling stands for flat's
    cp = json.loads(files["checkpoint.json"])
    assert cp["size"] == 2 and [h["agent"] for h in cp["heads"]] == ["home"]
    assert len(cp["heads"][0]["proof"]) == 1
    proc = verify(tmp_path / "home")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cited = sum(len(o["records"]) for o in claim["outages"] if o["claimed"])
    assert f"{cited} record(s) behind" in proc.stdout and OTHER not in proc.stdout


def test_a_claim_with_the_other_households_outages_is_refused(shared, tmp_path):
    conf = cfg.load(write_config(tmp_path / "config.toml"))
    full = b.from_store(shared, conf, "2026-10", now=NOW)
    pack = b.load_pack("pro-rata")
    claim = b.build(full, pack, pack.parse_options({}))
    with pytest.raises(UserError, match=f"the claim has outages of {OTHER}, which the evidence bundle "
                                        "is to leave out"):
        write_bundle(tmp_path / "home.zip", shared, claim, full, agents={"home"})
    assert not (tmp_path / "home.zip").exists()


def test_a_tampered_record_and_a_rebuilt_chain_fail_naming_what_they_contradict(shared, tmp_path, tsa):
    done, errors = st.stamp(shared, [tsa.url], [], 10)
    assert errors == [] and len(done) == 1
    conf = cfg.load(write_config(tmp_path / "config.toml"))
    claim, inputs = home_claim(shared, conf)
    assert (claim["ledger"]["checkpoint"], claim["ledger"]["root"]) == (done[0].checkpoint, done[0].hash)
    write_bundle(tmp_path / "home.zip", shared, claim, inputs, agents={"home"})
    folder = tmp_path / "home"
    files = unzip(tmp_path / "home.zip", folder)
    assert "stamps/stamps.json" in files
    for needle in other_household(shared):
        assert not any(needle in data for data in files.values())
    proc = verify(folder)
    assert proc.returncode == 0, proc.stdout
    assert f"stamp: checkpoint {done[0].checkpoint} (root {done[0].hash}) stamped by {tsa.url}" in proc.stdout
    chain = (folder / "chains" / "home.tsv").read_bytes()
    opening = claim["outages"][0]["records"][0]

    # one record edited, nothing else: its link breaks
    lines = chain.split(b"\n")
    line = bytearray(lines[opening["link"]])
    line[line.index(b'"at":') + 6] ^= 1
    lines[opening["link"]] = bytes(line)
    (folder / "chains" / "home.tsv").write_bytes(b"\n".join(lines))
    proc = verify(folder)
    assert proc.returncode == 1 and proc.stdout.strip() == (
        f"BROKEN: agent home link {opening['link']} (seq {opening['seq']}): hash mismatch "
        "(record edited, replaced or reordered)")

    # the chain rebuilt over the edit: its head contradicts the checkpoint
    (folder / "chains" / "home.tsv").write_bytes(chain)
    hashes = rewrite_chain(folder, opening["link"])
    cp = json.loads((folder / "checkpoint.json").read_text())
    head = cp["heads"][0]
    proc = verify(folder)
    assert proc.returncode == 1 and proc.stdout.strip() == (
        f"BROKEN: agent home: the chain ends at link {head['link']} with hash {hashes[head['link']]}, "
        f"but checkpoint {cp['checkpoint']} commits its link {head['link']} with hash {head['hash']} "
        "(the chain was rebuilt or cut after the checkpoint)")

    # ... and the checkpoint's head rewritten too: the proof no longer leads to the root
    head["hash"] = hashes[head["link"]]
    (folder / "checkpoint.json").write_text(json.dumps(cp))
    proc = verify(folder)
    assert proc.returncode == 1 and proc.stdout.startswith(
        f"BROKEN: agent home: its head (link {head['link']}) does not lead to the root of "
        f"checkpoint {cp['checkpoint']}")

    # ... and the root recomputed (claim.json's too): the stamp contradicts it
    root = ledger.root_from_proof(ledger.leaf_hash("home", head["link"], head["hash"]), head["index"],
                                  cp["size"], [bytes.fromhex(p) for p in head["proof"]]).hex()
    cp["root"] = root
    (folder / "checkpoint.json").write_text(json.dumps(cp))
    forged = json.loads(json.dumps(claim))
    forged["ledger"]["root"] = root
    forged["ledger"]["heads"]["home"]["hash"] = head["hash"]
    for o in forged["outages"]:
        for r in o["records"]:
            r["hash"] = hashes[r["link"]]
    (folder / "claim.json").write_text(json.dumps(forged))
    proc = verify(folder)
    assert proc.returncode == 1
    line = proc.stdout.strip()
    assert line.startswith(f"BROKEN: stamp stamps/1.tsr by {tsa.url} at ")
    assert f"contradicts checkpoint {cp['checkpoint']}: " in line and f"root {root}" in line
