"""Reference receiver for the central billing API (``cloud_sync/openapi.yaml``).

A small, complete implementation of the contract, used by the demo and the tests and as a model
for a real central system: it verifies every credit (signature against the enrolled gateway key,
hash, every field's domain, sequence continuity, chain link and the interval's history; see
:mod:`cloud_sync.credit`) and stores each (gateway, meter, seq) exactly once, however often a
gateway resends it. What it decides about a request is pure (:mod:`cloud_sync.receiver_intake`);
this package stores it and serves it:

==================  ==============================================================================
``store``           the interface every store offers, and the rules they share
``store_sqlite``    one SQLite file, one process (the demo's and the tests' default)
``store_pg``        PostgreSQL: several stateless receivers on one database (``[receiver-pg]`` extra)
``snapshot``        a batch's view of its gateway's credits, fetched before it is examined
``enrolment``       gateway keys and per-gateway tokens (stored hashed)
``migrations``      versioned schema files, ``cloud_sync/migrations/{sqlite,pg}/``
``app``             the HTTP API (Starlette)
``pull``            pulling credits from gateways' local APIs into the same store
``cli``             ``python -m cloud_sync.receiver`` (serve, enrol, list, revoke, rotate-token, pull)
==================  ==============================================================================
"""

from cloud_sync.receiver.app import create_app
from cloud_sync.receiver.store import CreditStore, ReceiverConfigError, StoreUnavailable, open_store
from cloud_sync.receiver.store_sqlite import ReceiverStore, SqliteStore

__all__ = ["CreditStore", "ReceiverConfigError", "ReceiverStore", "SqliteStore", "StoreUnavailable", "create_app",
           "open_store"]
