"""A local Stellar network with a Horizon-compatible API, for tests and the demo.

There is no network here and no Horizon to install, so this stands in for both, where it
matters for money: it decodes real envelopes (stellar-sdk XDR) and applies them with the
network's rules — the network passphrase, signatures against each source account's signers
and the right threshold, sequence numbers, fee bids and fees charged, time and ledger
bounds, balances in integer stroops, reserves and sponsorship, trustlines and their limits,
issuer semantics — and answers with Horizon's JSON and result codes, so the unmodified
stellar-sdk (``Server`` / ``ServerAsync``) works against it.

Layout (after moto's stand-ins): the rules are pure (``transaction.py`` and ``ops_*.py`` over
``state.py``, results as XDR codes from ``codes.py``); ``ledger.py`` is the network (clock,
store, one writer); ``store.py`` the SQLite file; ``responses.py`` the wire shapes;
``urls.py`` the routes; ``faults.py`` scripted failures for tests; ``server.py`` and
``cli.py`` run it (``meter-gateway stellar ledger`` or ``python -m cloud_sync.horizon``).
"""
