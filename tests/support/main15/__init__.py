"""main's ledger before the sixteenth pass (73dbd6c0): a :class:`~tests.support.main15.bid_table.
BidTable` a task, its rows' digest hashes kept a table at a time. Copied as it was, with its team
award (team_award.py; only the imports between these four modules point here): the oracle the
ledger's one set of bid columns is compared with to the bit (tests/unit/coordination/
test_batched_holders.py) and what the formation's one-process A/B puts back
(tests/support/old_merge.py's ``main15_merge``)."""
