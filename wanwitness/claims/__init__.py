"""Claims: support tickets, the tariff, rule packs and the refund claim built from the ledger.

`tickets` (store CRUD) and `link` (tickets <-> outages by time) feed `build`, which
assembles the claim dict from the store or from files (`files`); `csvout` and the
letter renderer (`render`) write it out, `bundle` packs it with the ledger records
and a standalone verifier.
"""
