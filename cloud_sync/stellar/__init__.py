"""Consumption tokenized on Stellar (seed 000): custodial meter accounts, credits paid exactly once.

Roles. The utility (tenant) issues the asset and funds this gateway's account (its identity
key) with XLM and a capped allowance of the asset; the box never holds the issuer's or the
platform's key. Every meter has one custodial account, created by the gateway with a one-time
device key that is discarded: the platform's master signer alone meets the account's HIGH
threshold; the gateway is a signer that meets LOW and MEDIUM only, so it can pay a negative
correction back but never change who controls the account.

Layout. ``amounts`` (exact Wh → stroops) and ``txbuild`` (envelopes: credit batches,
provisioning, invoices) are pure; ``store`` keeps what must survive a power cut (every
envelope is stored before its first submit) in the gateway's ledger file; ``horizon`` is the
thin I/O to Horizon (stellar-sdk's ``ServerAsync`` over requests); ``submitter`` is the
exactly-once state machine of one stored envelope; ``provision`` and ``uplink`` drive it;
``invoice`` is seed 000's CreateInvoice; ``onboarding`` checks a tenant's set-up; ``cli`` the
``meter-gateway stellar …`` commands.

Import cost: stellar-sdk weighs ~40 MiB, so nothing here is imported unless ``[stellar]`` is
configured (the daemon and the CLI import these modules lazily).
"""
