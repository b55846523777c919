"""Peer-to-peer energy sharing (seed 001): agreements, the delivery planner, signed delivery records.

* :mod:`.planner` — pure: from a provider meter's export intervals, when an agreement gets its one
  delivery record and what it says (whole kWh, the Wh remainder carried);
* :mod:`.record` — the record's canonical JSON and the gateway's signature over it;
* :mod:`.store` — the records and their Soroban transactions in the ledger file (migration 0006),
  each decided and written in one write transaction;
* :mod:`.task` — the daemon's planner task.

Sending them is :mod:`cloud_sync.soroban` (imported only with ``[soroban]``).
"""
