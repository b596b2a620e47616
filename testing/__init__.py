"""Test support shared by tests/, hwtests/ and bench/: not shipped in the wheel."""
