"""mypy on the collector package ([tool.mypy] in pyproject.toml): clean, and strict
enough that a wrong use of a config value is caught (no `Any` leaks out of config)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def mypy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_the_collector_package_typechecks():
    proc = mypy()
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_config_value_used_as_the_wrong_type_is_reported(tmp_path):
    misuse = tmp_path / "misuse.py"
    misuse.write_text(
        "from wanwitness.config import load\n"
        "conf = load()\n"
        "port: int = conf.broker.prefix\n"             # a str
        "limit: int = conf.get('collector', 'batch_max')\n"  # untyped access: object, not Any
        "fee = conf.tariff.monthly_fee + 1\n"          # "39.99" is a str: Decimal(it) first
        "ok: int = conf.collector.batch_max\n")
    proc = mypy(str(misuse))
    out = proc.stdout
    assert proc.returncode == 1, out
    assert "misuse.py:3: error" in out and "misuse.py:4: error" in out and "misuse.py:5: error" in out
    assert "misuse.py:6" not in out
