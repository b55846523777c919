"""A batch's ed25519 checks spread over the machine's cores, before the batch is examined in order.

Verifying a signature is most of a receiver's CPU per credit (about 60 µs of libsodium, against
about 40 µs for everything else: decoding, the chain rules, storing), and the checks of one batch
are independent of each other. libsodium runs without Python's GIL (PyNaCl's cffi binding
releases it), so a few threads verify a batch in a fraction of the time one does.

Nothing about the verdicts changes: :func:`preverify` runs exactly the check that
:func:`cloud_sync.receiver_intake.examine` would run (``authenticate`` against the same enrolled
key, on the same objects ``parse_wire`` returns, which ``examine`` still runs first) and records
only "passed"; ``examine`` skips its
own check for an item that passed and runs it as usual for every other one (a forged, tampered or
malformed credit gets its usual reason from there). The chain, domain and history rules still
run credit by credit, in order, inside the store's transaction.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from cloud_sync.credit import authenticate

MIN_PER_THREAD = 64
"""Credits per thread below which one thread does it all (a hand-off costs about a verification)."""
THREADS = max(1, min(4, os.cpu_count() or 1))
"""Verifying threads per batch: the cores, up to four (a receiver also decodes and stores meanwhile)."""

_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="verify")
    return _pool


def _passed(items: Sequence[Any], expected_key: str, skip: Callable[[Any], bool] | None) -> list[bool]:
    out = []
    for item in items:
        if skip is not None and skip(item):
            out.append(False)
            continue
        # The very objects parse_wire hands examine (item["credit"], ["hash"], ["signature"]); their shape is
        # examine's to judge (parse_wire runs there first, whatever this says), so it is not checked twice.
        try:
            authenticate(item["credit"], item["hash"], item["signature"], expected_key)
        except Exception:  # noqa: BLE001 - anything but a pass leaves the verdict to examine
            out.append(False)
        else:
            out.append(True)
    return out


def preverify(items: Sequence[Any], expected_key: str | None, *, skip: Callable[[Any], bool] | None = None,
              executor: Executor | None = None) -> list[bool] | None:
    """Per item: True when its signature and hash check passed for ``expected_key`` (None: no key, no checks).

    ``skip``: items not worth checking ahead (stored already: ``examine`` answers ``duplicate``
    for an identical copy without verifying it again); they are False, so ``examine`` decides.
    """
    if expected_key is None or not items:
        return None
    threads = min(THREADS, len(items) // MIN_PER_THREAD)
    if threads <= 1:
        return _passed(items, expected_key, skip)
    pool = executor or _executor()
    size = -(-len(items) // threads)
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    futures = [pool.submit(_passed, chunk, expected_key, skip) for chunk in chunks[1:]]
    flags = _passed(chunks[0], expected_key, skip)  # this thread takes a share too
    for future in futures:
        flags += future.result()
    return flags
