"""The evidence bundle, for real: records through ingest, `wanwitness claim --evidence`,
unzip, and its verify.py run by a bare `python3 -I` (no wanwitness, no packages)."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.test_claims_build import october, write_config
from wanwitness.store import open_store

BUNDLE_FILES = {"claim.json", "chains/home.tsv", "checkpoint.json", "outages.csv", "tickets.csv",
                "tariff.toml", "verify.py", "README.txt"}


def bare_python() -> str:
    """A system python3 (not this venv's), as the other side would have it."""
    for candidate in ("/usr/bin/python3", shutil.which("python3")):
        if candidate and os.path.exists(candidate):
            return candidate
    raise AssertionError("no python3 on this machine")


def verify(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([bare_python(), "-I", "verify.py"], cwd=folder, capture_output=True,
                          text=True, timeout=60, env={"PATH": os.environ.get("PATH", "")})


def make_bundle(ww, conf: Path, db_url: str, tmp_path: Path) -> tuple[Path, dict, set[str]]:
    """October's claim with --evidence, unzipped: (folder, claim, the zip's file names)."""
    proc = ww("--config", str(conf), "claim", "--db", db_url, "--period", "2026-10",
              "--rules", "pro-rata", "--out", str(tmp_path / "claim.json"),
              "--evidence", str(tmp_path / "evidence.zip"))
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(tmp_path / "evidence.zip") as zf:
        names = set(zf.namelist())
        zf.extractall(folder)
    return folder, json.loads((tmp_path / "claim.json").read_text()), names


@pytest.fixture
def bundle(db_url, tmp_path, ww):
    st = open_store(db_url)
    scenario = october(st)
    st.dispose()
    folder, claim, names = make_bundle(ww, write_config(tmp_path / "config.toml"), db_url, tmp_path)
    assert names == BUNDLE_FILES
    return folder, claim, scenario


def chain_lines(folder: Path) -> list[bytes]:
    return (folder / "chains" / "home.tsv").read_bytes().split(b"\n")


def rewrite_chain(folder: Path, edit_link: int, agent: str = "home") -> dict[int, str]:
    """Flip one digit of the record at edit_link and recompute the chain's hashes from
    there on, as an owner rebuilding it would; returns the new hashes."""
    path = folder / "chains" / f"{agent}.tsv"
    lines = path.read_bytes().split(b"\n")
    prev, hashes = bytes(32), {}
    for i in range(1, len(lines) - 1):
        n, seq, recv, _digest, entry = lines[i].split(b"\t", 4)
        if i == edit_link:
            k = entry.index(b'"at":') + 6
            entry = entry[:k] + bytes([entry[k] ^ 1]) + entry[k + 1:]
        prev = hashlib.sha256(prev + entry + recv).digest()
        hashes[int(n)] = prev.hex()
        lines[i] = b"\t".join([n, seq, recv, prev.hex().encode(), entry])
    path.write_bytes(b"\n".join(lines))
    return hashes


def test_the_bundle_verifies_with_a_bare_python(bundle):
    folder, claim, _ = bundle
    assert json.loads((folder / "claim.json").read_text()) == claim
    proc = verify(folder)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    led = claim["ledger"]
    n = led["heads"]["home"]["link"]
    assert proc.stdout.startswith(f"ok: chains home ({n} links) end at the heads checkpoint "
                                  f"{led['checkpoint']} commits, whose inclusion proofs lead to its "
                                  f"root {led['root']} (claim.json's)")
    cited = sum(len(o["records"]) for o in claim["outages"] if o["claimed"])
    assert cited == 7 and f"{cited} record(s) behind 3 claimed outage(s)" in proc.stdout


def test_verify_py_imports_only_the_standard_library(bundle):
    folder, _, _ = bundle
    tree = ast.parse((folder / "verify.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module}
    assert imported and imported <= set(sys.stdlib_module_names)


def test_one_flipped_byte_in_a_cited_record_is_named(bundle):
    folder, claim, scenario = bundle
    a = claim["outages"][0]
    opening = a["records"][0]
    assert opening["seq"] == scenario.seqs["A"] and opening["role"] == "open"
    lines = chain_lines(folder)
    line = bytearray(lines[opening["link"]])  # line 0 is the header
    entry_at = line.index(b'{"agent"')
    i = line.index(b'"at":', entry_at) + 6
    line[i] ^= 0x01                                  # one digit of the outage's start time
    lines[opening["link"]] = bytes(line)
    (folder / "chains" / "home.tsv").write_bytes(b"\n".join(lines))
    proc = verify(folder)
    assert proc.returncode == 1
    assert proc.stdout.strip() == (f"BROKEN: agent home link {opening['link']} (seq {opening['seq']}): "
                                   "hash mismatch (record edited, replaced or reordered)")


def test_a_deleted_link_a_forged_head_and_a_wrong_citation_are_caught(bundle):
    folder, claim, _ = bundle
    chain = folder / "chains" / "home.tsv"
    original = chain.read_bytes()
    lines = original.split(b"\n")
    chain.write_bytes(b"\n".join(lines[:5] + lines[6:]))
    proc = verify(folder)
    assert proc.returncode == 1 and "BROKEN: agent home link 5 is missing (next line is link 6)" in proc.stdout

    chain.write_bytes(b"\n".join(lines[:-3] + [b""]))  # the last two links cut
    proc = verify(folder)
    led = claim["ledger"]
    n = led["heads"]["home"]["link"]
    assert proc.returncode == 1 and (f"BROKEN: agent home: the chain ends at link {n - 2} with hash "
                                     in proc.stdout)
    assert f"but checkpoint {led['checkpoint']} commits its link {n} with hash" in proc.stdout

    chain.write_bytes(original)
    forged = json.loads(json.dumps(claim))
    forged["outages"][0]["records"][0]["link"] += 1  # cite another record
    (folder / "claim.json").write_text(json.dumps(forged))
    proc = verify(folder)
    assert proc.returncode == 1 and "the chain holds seq" in proc.stdout

    forged = json.loads(json.dumps(claim))
    forged["ledger"]["root"] = "0" * 64
    (folder / "claim.json").write_text(json.dumps(forged))
    proc = verify(folder)
    assert proc.returncode == 1 and "but claim.json's is checkpoint" in proc.stdout


def test_the_bundle_inputs_recompute_the_same_claim_from_files(bundle, ww):
    folder, claim, _ = bundle
    readme = (folder / "README.txt").read_text()
    command = next(line.strip() for line in readme.splitlines()
                   if line.strip().startswith("wanwitness claim --outages"))
    proc = ww(*shlex.split(command)[1:], cwd=folder)
    assert proc.returncode == 0, proc.stderr
    again = json.loads(proc.stdout)
    assert again["source"] == "files" and again["ledger"] is None
    assert (again["total"], again["items"]) == (claim["total"], claim["items"])
    assert [(o["id"], o["claimed"], o["counted_s"]) for o in again["outages"]] == \
        [(o["id"], o["claimed"], o["counted_s"]) for o in claim["outages"]]
    assert [t["outages"] for t in again["tickets"]] == [t["outages"] for t in claim["tickets"]]


def test_no_bundle_from_a_broken_ledger(tmp_path, ww):
    db = f"sqlite:///{tmp_path / 'w.db'}"
    st = open_store(db)
    october(st)
    with st.engine.begin() as c:
        c.exec_driver_sql("UPDATE records SET body = replace(body, 'timeout', 'tImeout') WHERE seq = 5")
    st.dispose()
    conf = write_config(tmp_path / "config.toml")
    out, zip_path = tmp_path / "claim.json", tmp_path / "evidence.zip"
    proc = ww("--config", str(conf), "claim", "--db", db, "--period", "2026-10", "--rules",
              "pro-rata", "--out", str(out), "--evidence", str(zip_path))
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("wanwitness: the ledger is broken at agent home link 5; "
                                   "run `wanwitness ledger verify`")
    assert not out.exists() and not zip_path.exists()
    assert list(tmp_path.glob(".wanwitness-bundle-*")) == []
