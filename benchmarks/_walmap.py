"""What each write transaction puts in the WAL, by table and index.

The write volume of the ledger is whole pages: every transaction appends one WAL frame (24-byte
header + one page) per page it changed, and each checkpoint writes every distinct page of the WAL
back into the database file. Counting bytes says how much; this says *which b-trees* cost it, so a
layout change can be decided by measurement.

:class:`WalTap` is polled after each transaction: it reads the frames appended to ``ledger.db-wal``
since the last poll (a new pair of salts in the WAL header means the WAL was restarted after a
checkpoint: reading starts over at its first frame), keeps the page numbers of the committed ones,
and the distinct pages of each WAL generation (what its checkpoint copies back). At the end,
:meth:`WalTap.breakdown` names every page from the ``dbstat`` virtual table (b-tree and overflow
pages by table or index), the pointer-map pages of an auto-vacuum file, and page 1 (the header and
``sqlite_schema``); anything else is a free-list page now. A page freed and reused by another
b-tree during the run is named by its owner at the end.
"""

from __future__ import annotations

import contextlib
import sqlite3
import struct
from collections import Counter, defaultdict
from pathlib import Path

WAL_HEADER = 32
FRAME_HEADER = 24


class WalTap:
    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.wal_path = db_path.with_name(db_path.name + "-wal")
        self._salts: tuple[int, int] | None = None
        self._offset = WAL_HEADER
        self.page_size = 0
        self.frames: dict[str, list[int]] = defaultdict(list)
        """Per label, the page number of every committed frame seen."""
        self.transactions: Counter[str] = Counter()
        self.generation_pages: list[set[int]] = [set()]
        """Distinct pages per WAL generation: what each checkpoint writes into the database file."""
        self.block_bytes: Counter[str] = Counter()
        """Per label, bytes sent to the block layer by its transactions (``write_bytes``), checkpoints apart."""
        self.checkpoint_bytes = 0
        """Block-layer bytes of the transactions that ran a checkpoint (the database file changed)."""
        self.checkpoints: Counter[str] = Counter()
        self._db_stamp = self._stamp()

    def _stamp(self) -> tuple[int, int]:
        try:
            st = self.db_path.stat()
        except FileNotFoundError:
            return (0, 0)
        return (st.st_mtime_ns, st.st_size)

    def reset_counts(self) -> None:
        """Forget what was seen (the warm-up), keep the position in the WAL."""
        self.frames.clear()
        self.transactions.clear()
        self.generation_pages = [set()]
        self.block_bytes.clear()
        self.checkpoint_bytes = 0
        self.checkpoints.clear()
        self._db_stamp = self._stamp()

    def checkpointed(self, label: str, block_bytes: int) -> None:
        """A checkpoint run outside a transaction (the end of the measured day), and its bytes."""
        self._db_stamp = self._stamp()
        self.checkpoint_bytes += block_bytes
        self.checkpoints[label] += 1

    def poll(self, label: str, block_bytes: int = 0) -> int:
        """Record the frames committed since the last poll under ``label``; returns how many.

        ``block_bytes``: what the transaction sent to the block layer, counted under ``label``, or
        under the checkpoints when the database file changed (in WAL mode only a checkpoint writes it).
        """
        stamp = self._stamp()
        if stamp != self._db_stamp:
            self._db_stamp = stamp
            self.checkpoint_bytes += block_bytes
            self.checkpoints[label] += 1
        else:
            self.block_bytes[label] += block_bytes
        try:
            with open(self.wal_path, "rb") as wal:
                header = wal.read(WAL_HEADER)
                if len(header) < WAL_HEADER:
                    return 0
                _magic, _version, page_size, _ckpt, salt1, salt2 = struct.unpack(">IIIIII", header[:24])
                self.page_size = page_size
                if (salt1, salt2) != self._salts:
                    if self._salts is not None:
                        self.generation_pages.append(set())
                    self._salts, self._offset = (salt1, salt2), WAL_HEADER
                wal.seek(self._offset)
                data = wal.read()
        except FileNotFoundError:
            return 0
        size = FRAME_HEADER + self.page_size
        pages: list[int] = []
        committed: list[int] = []
        end = 0
        for at in range(0, len(data) - size + 1, size):
            pgno, commit, s1, s2 = struct.unpack(">IIII", data[at:at + 16])
            if (s1, s2) != self._salts:
                break
            pages.append(pgno)
            if commit:
                committed += pages
                pages = []
                end = at + size
        self._offset += end
        if committed:
            self.frames[label] += committed
            self.transactions[label] += 1
            self.generation_pages[-1].update(committed)
        return len(committed)

    def owners(self) -> dict[int, str]:
        """Page number -> the b-tree (table or index) or the structure holding it now."""
        owner: dict[int, str] = {1: "page 1 (header, sqlite_schema)"}
        with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)) as db:
            for name, pageno in db.execute("SELECT name, pageno FROM dbstat"):
                owner.setdefault(int(pageno), str(name))
            (auto_vacuum,) = db.execute("PRAGMA auto_vacuum").fetchone()
            (page_count,) = db.execute("PRAGMA page_count").fetchone()
            (page_size,) = db.execute("PRAGMA page_size").fetchone()
        if auto_vacuum:
            per_map = page_size // 5  # each pointer-map page describes this many pages after it
            p = 2
            while p <= page_count:
                owner[p] = "pointer map (auto-vacuum)"
                p += per_map + 1
        return owner

    def breakdown(self, per: dict[str, float] | None = None) -> list[str]:
        """Lines of text: frames per transaction of each label, and per checkpoint, by b-tree."""
        owner = self.owners()
        lines: list[str] = []
        for label, pages in sorted(self.frames.items()):
            n = self.transactions[label]
            counts = Counter(owner.get(p, "free list now") for p in pages)
            lines.append(f"{label}: {n} transactions, {len(pages) / n:.1f} WAL frames each "
                         f"({len(pages) * (self.page_size + FRAME_HEADER) / 1e6:.2f} MB in all; block layer "
                         f"{self.block_bytes[label] / 1e6:.2f} MB, those that checkpointed apart)")
            lines += [f"    {c / n:6.2f}  {name}" for name, c in counts.most_common()]
        generations = [g for g in self.generation_pages if g]
        if generations:
            total = sum(len(g) for g in generations)
            counts = Counter(owner.get(p, "free list now") for g in generations for p in g)
            lines.append(f"checkpoints: {len(generations)} WAL generations, {total / len(generations):.0f} distinct "
                         f"pages each ({total * self.page_size / 1e6:.2f} MB in all; "
                         f"block layer {self.checkpoint_bytes / 1e6:.2f} MB in the transactions that ran one: "
                         f"{', '.join(f'{n} {k}' for k, n in sorted(self.checkpoints.items()))})")
            lines += [f"    {c / len(generations):6.1f}  {name}" for name, c in counts.most_common(8)]
        return lines
