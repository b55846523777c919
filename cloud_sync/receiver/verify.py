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

:func:`start_checks` runs the same checks in the background instead: the SQLite store starts them as soon as it
holds the batch's transaction and its enrolled key, and meanwhile reads what the batch needs, examines it
assuming every check passes and inserts what that accepts; the threads verify on both cores while it works
(libsodium without the GIL, the store's Python and SQLite with it). Only if a check failed is any of that
redone, with the real flags (see ``store_sqlite._examine``).
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


CHUNK = 50
"""Credits per task of :func:`start_checks` (about 3.5 ms of verifying): small enough that the threads share a batch
evenly whatever else runs, large enough that a task's hand-off (some µs) is noise."""


class Pending:
    """Checks started by :func:`start_checks`; :meth:`flags` waits for them."""

    def __init__(self, items: Sequence[Any], expected_key: str, pool: Executor) -> None:
        self._skip: Callable[[Any], bool] | None = None
        self._futures = [pool.submit(self._check, items[i:i + CHUNK], expected_key)
                         for i in range(0, len(items), CHUNK)]

    def _check(self, chunk: Sequence[Any], expected_key: str) -> list[bool]:
        return _passed(chunk, expected_key, self._skipped)

    def _skipped(self, item: Any) -> bool:
        skip = self._skip
        return skip is not None and skip(item)

    def skip(self, skip: Callable[[Any], bool]) -> None:
        """From now on, leave out the items ``skip`` names (stored already, see :func:`preverify`); an item
        checked before this call keeps its verdict, which is as true as ever."""
        self._skip = skip

    def flags(self) -> list[bool]:
        """Per item, as :func:`preverify` gives them: True when its signature and hash check passed."""
        out: list[bool] = []
        for future in self._futures:
            out += future.result()
        return out


def start_checks(items: Sequence[Any], expected_key: str | None, *, executor: Executor | None = None) -> Pending | None:
    """The checks of :func:`preverify`, started on the verifying threads; None when a batch is too small to be
    worth the hand-off (or there is one core, or no key): then :func:`preverify` it in line."""
    if expected_key is None or THREADS <= 1 or len(items) < 2 * MIN_PER_THREAD:
        return None
    return Pending(items, expected_key, executor or _executor())


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
