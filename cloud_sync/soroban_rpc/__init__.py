"""A local Soroban RPC with the seed-001 P2P energy-sharing contract, for tests and the demo (see README.md).

Layout: ``contract.py`` the contract as a pure state machine; ``scval.py`` its SCVal arguments and
return values; ``auth.py`` authorisation entries against account signers; ``txcheck.py`` the envelope
rules (Horizon's); ``node.py`` the contract on the Horizon stand-in's ledger with its SQLite state;
``rpc.py`` the JSON-RPC shell and faults; ``server.py`` Horizon + RPC on one port; ``cli.py`` the
commands; ``client.py`` the stellar-sdk invocation flow; ``testing.py`` fixtures' helpers.
"""
