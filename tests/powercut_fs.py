"""A FUSE file system whose power can be cut: what was not fsynced is lost.

Run as ``python -m tests.powercut_fs BACKING MOUNTPOINT [--seed N]`` (root, or a
user allowed to mount FUSE). It serves the files of BACKING at MOUNTPOINT from
memory; BACKING holds only what is *durable*. A line on standard input:

* ``cut lose``: the power is cut. Everything not yet made durable is lost; the
  process exits at once (the mount is left dead, unmount it lazily).
* ``cut torn``: the power is cut, and the storage had written back an arbitrary
  part of what was pending: each dirty 512-byte sector of each file survives
  with probability 1/2 (in any order, so a multi-sector write may be torn), a
  pending size change survives or not, and a random prefix of the pending
  namespace changes survives (a journal replays in order).
* ``arm MODE NAME N``: cut (``lose`` or ``torn``) right after the N-th write from
  now to a file called NAME: in the middle of a transaction (``ledger.db-wal``)
  or of a checkpoint (``ledger.db``), moments a random cut rarely hits.

Each cut prints one JSON line (what was pending, what was kept) before exiting.

What becomes durable, and when (the model of a journaling file system, ext4 or
XFS, on a device that honours flushes):

* A file's data: when that file is fsynced (``fsync``/``fdatasync``). Closing
  it, or another file's fsync, does not.
* Namespace changes (create, mkdir, rename, unlink, rmdir, chmod): in order, at
  the next fsync of anything on the file system (a journal commit), so a file
  fsynced once is found again by its name.

What it does not simulate: a device that acknowledges a flush it has not done
(cheap SD cards can); damage to data that was already durable (an SD card's
controller rewriting an erase block, bit rot); a torn write inside one 512-byte
sector; the kernel's own heuristics (ext4's ``auto_da_alloc``, periodic
writeback and 5-s journal commits are covered only in that ``torn`` persists an
arbitrary part of what was pending); hard links and symbolic links (refused).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import stat
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mfusepy

SECTOR = 512
FREE_BYTES = 8 << 30
"""Free space statfs reports: plenty, so the gateway's low-disk path runs only when a test asks for it."""


@dataclass
class Node:
    ino: int
    mode: int
    data: bytearray = field(default_factory=bytearray)
    children: dict[str, Node] = field(default_factory=dict)
    dirty: set[int] = field(default_factory=set)
    """Sectors written since the last fsync."""
    size_dirty: bool = False
    times: tuple[int, int, int] = (0, 0, 0)
    """atime, mtime, ctime in ns."""

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


def _err(code: int) -> mfusepy.FuseOSError:
    return mfusepy.FuseOSError(code)


def _split(path: str) -> tuple[str, str]:
    parent, _, name = path.rstrip("/").rpartition("/")
    return parent or "/", name


class PowerCutFS(mfusepy.Operations):  # type: ignore[misc]
    use_ns = True

    def __init__(self, backing: Path, seed: int) -> None:
        self.backing = backing
        self.rng = random.Random(seed)
        self._mutex = threading.Lock()
        self.next_ino = 1
        self.handles: dict[int, Node] = {}
        self.next_fh = 1
        self.journal: list[tuple[Any, ...]] = []
        """Namespace changes not yet durable, in order."""
        self.durable: dict[str, int] = {}
        """Path -> inode number, as BACKING has it."""
        self.inodes: dict[int, Node] = {}
        self.root = self._load(backing, "/")
        self.armed: tuple[str, str, int] | None = None
        """(mode, file name, writes left) of an armed cut."""

    # ---- state ------------------------------------------------------------------

    def _new(self, mode: int, data: bytes = b"") -> Node:
        now = time.time_ns()
        node = Node(self.next_ino, mode, bytearray(data), times=(now, now, now))
        self.inodes[node.ino] = node
        self.next_ino += 1
        return node

    def _load(self, real: Path, path: str) -> Node:
        st = real.lstat()
        if stat.S_ISDIR(st.st_mode):
            node = self._new(st.st_mode)
            for entry in sorted(os.listdir(real)):
                node.children[entry] = self._load(real / entry, path.rstrip("/") + "/" + entry)
        else:
            node = self._new(st.st_mode, real.read_bytes())
        self.durable[path] = node.ino
        return node

    def _lookup(self, path: str) -> Node:
        node = self.root
        for part in path.strip("/").split("/"):
            if not part:
                continue
            if not node.is_dir or part not in node.children:
                raise _err(errno.ENOENT)
            node = node.children[part]
        return node

    def _parent(self, path: str) -> tuple[Node, str]:
        parent, name = _split(path)
        node = self._lookup(parent)
        if not node.is_dir:
            raise _err(errno.ENOTDIR)
        return node, name

    def _node(self, path: str | None, fh: int | None = None) -> Node:
        if fh:
            return self.handles[fh]
        if path is None:
            raise _err(errno.EBADF)
        return self._lookup(path)

    def _handle(self, node: Node) -> int:
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = node
        return fh

    # ---- durability -----------------------------------------------------------------

    def _real(self, path: str) -> Path:
        return self.backing / path.lstrip("/")

    def _replay(self, entry: tuple[Any, ...]) -> None:
        """Apply one journal entry to BACKING and to the durable name map."""
        op, path = entry[0], entry[1]
        real = self._real(path)
        if op == "mkdir":
            real.mkdir(mode=entry[2] & 0o7777)
            self.durable[path] = entry[3]
        elif op == "create":
            fd = os.open(real, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, entry[2] & 0o7777)
            os.close(fd)
            self.durable[path] = entry[3]
        elif op in ("unlink", "rmdir"):
            (real.rmdir if op == "rmdir" else real.unlink)()
            del self.durable[path]
        elif op == "rename":
            new = entry[2]
            os.replace(real, self._real(new))
            moved = {p: i for p, i in self.durable.items() if p == path or p.startswith(path + "/")}
            for p in list(self.durable):
                if p == new or p.startswith(new + "/"):
                    del self.durable[p]
            for p, i in moved.items():
                del self.durable[p]
                self.durable[new + p[len(path):]] = i
        elif op == "chmod":
            real.chmod(entry[2] & 0o7777)

    def _commit_journal(self, upto: int | None = None) -> None:
        entries = self.journal if upto is None else self.journal[:upto]
        for entry in entries:
            self._replay(entry)
        self.journal = self.journal[len(entries):]

    def _durable_path(self, node: Node) -> str | None:
        for path, ino in self.durable.items():
            if ino == node.ino:
                return path
        return None

    def _persist(self, node: Node, sectors: Iterator[int] | set[int], size: bool) -> None:
        """Write ``sectors`` of the node's current content (and its size) to its durable file."""
        path = self._durable_path(node)
        if path is None or node.is_dir:
            return
        fd = os.open(self._real(path), os.O_WRONLY)
        try:
            for sector in sorted(sectors):
                start = sector * SECTOR
                chunk = bytes(node.data[start:start + SECTOR])
                if chunk:
                    os.pwrite(fd, chunk, start)
            if size:
                os.ftruncate(fd, len(node.data))
        finally:
            os.close(fd)

    def _sync(self, node: Node) -> None:
        self._commit_journal()
        if not node.is_dir:
            self._persist(node, node.dirty, True)
            node.dirty.clear()
            node.size_dirty = False

    def cut(self, mode: str) -> None:
        """The power goes: make durable only what the mode lets survive, say what was lost, exit at once."""
        with self._mutex:
            self._cut(mode)

    def arm(self, mode: str, name: str, writes: int) -> None:
        with self._mutex:
            self.armed = (mode, name, writes)

    def _cut(self, mode: str) -> None:
        """Called with the mutex held (by :meth:`cut`, or by the write that springs an armed cut)."""
        dirty = {n.ino: set(n.dirty) for n in self.inodes.values() if n.dirty and not n.is_dir}
        names = {ino: self._durable_path(self.inodes[ino]) or "(not durable yet)" for ino in dirty}
        report: dict[str, Any] = {
            "mode": mode, "journal_pending": len(self.journal), "sectors_dirty": sum(map(len, dirty.values())),
            "journal_kept": 0, "sectors_kept": 0,
            "dirty": {names[ino]: len(sectors) for ino, sectors in dirty.items()}}
        if mode == "torn":
            report["journal_kept"] = kept_entries = self.rng.randint(0, len(self.journal))
            self._commit_journal(kept_entries)
            for node in self.inodes.values():
                if node.ino not in dirty:
                    continue
                kept = {s for s in dirty[node.ino] if self.rng.random() < 0.5}
                if self._durable_path(node) is not None:
                    report["sectors_kept"] += len(kept)
                self._persist(node, kept, node.size_dirty and self.rng.random() < 0.5)
        print(json.dumps(report), flush=True)
        os._exit(0)

    # ---- FUSE operations ----------------------------------------------------------------

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        with self._mutex:
            node = self._node(path, fh)
            atime, mtime, ctime = node.times
            return {"st_ino": node.ino, "st_mode": node.mode, "st_nlink": 2 if node.is_dir else 1,
                    "st_size": len(node.data), "st_blocks": (len(node.data) + 511) // 512, "st_blksize": 4096,
                    "st_uid": os.getuid(), "st_gid": os.getgid(),
                    "st_atime": atime, "st_mtime": mtime, "st_ctime": ctime}

    def readdir(self, path: str, fh: int) -> list[str]:
        with self._mutex:
            return [".", "..", *self._lookup(path).children]

    def statfs(self, path: str) -> dict[str, int]:
        used = sum(len(n.data) for n in self.inodes.values()) // 4096
        free = FREE_BYTES // 4096
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": used + free, "f_bfree": free, "f_bavail": free,
                "f_files": 1 << 20, "f_ffree": 1 << 20, "f_favail": 1 << 20, "f_namemax": 255}

    def access(self, path: str, amode: int) -> int:
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        with self._mutex:
            parent, name = self._parent(path)
            if name in parent.children:
                raise _err(errno.EEXIST)
            node = self._new(stat.S_IFDIR | (mode & 0o7777))
            parent.children[name] = node
            self.journal.append(("mkdir", path, mode, node.ino))
            return 0

    def rmdir(self, path: str) -> int:
        with self._mutex:
            parent, name = self._parent(path)
            node = self._lookup(path)
            if not node.is_dir:
                raise _err(errno.ENOTDIR)
            if node.children:
                raise _err(errno.ENOTEMPTY)
            del parent.children[name]
            self.journal.append(("rmdir", path))
            return 0

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        with self._mutex:
            parent, name = self._parent(path)
            if name in parent.children:
                node = parent.children[name]
            else:
                node = self._new(stat.S_IFREG | (mode & 0o7777))
                parent.children[name] = node
                self.journal.append(("create", path, mode, node.ino))
            return self._handle(node)

    def open(self, path: str, flags: int) -> int:
        with self._mutex:
            node = self._lookup(path)
            if flags & os.O_TRUNC and not node.is_dir:  # libfuse passes it on (atomic_o_trunc)
                self._truncate(node, 0)
            return self._handle(node)

    def opendir(self, path: str) -> int:
        with self._mutex:
            return self._handle(self._lookup(path))

    def release(self, path: str | None, fh: int) -> int:
        with self._mutex:
            self.handles.pop(fh, None)
            return 0

    def releasedir(self, path: str | None, fh: int) -> int:
        return self.release(path, fh)

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        with self._mutex:
            return bytes(self._node(path, fh).data[offset:offset + size])

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        with self._mutex:
            node = self._node(path, fh)
            end = offset + len(data)
            if end > len(node.data):
                node.data.extend(bytes(end - len(node.data)))
                node.size_dirty = True
            node.data[offset:end] = data
            if data:
                node.dirty.update(range(offset // SECTOR, (end - 1) // SECTOR + 1))
            now = time.time_ns()
            node.times = (node.times[0], now, now)
            if self.armed is not None and path is not None and path.rsplit("/", 1)[-1] == self.armed[1]:
                mode, name, left = self.armed
                self.armed = (mode, name, left - 1)
                if left <= 1:
                    self._cut(mode)
            return len(data)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        with self._mutex:
            self._truncate(self._node(path, fh), length)
            return 0

    @staticmethod
    def _truncate(node: Node, length: int) -> None:
        if length < len(node.data):
            del node.data[length:]
            # The sector the new end falls in must be rewritten (its tail is gone).
            if length % SECTOR:
                node.dirty.add(length // SECTOR)
        else:
            node.data.extend(bytes(length - len(node.data)))
        node.size_dirty = True

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        with self._mutex:
            self._sync(self._node(path, fh))
            return 0

    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        return self.fsync(path, datasync, fh)

    def flush(self, path: str | None, fh: int) -> int:
        return 0

    def unlink(self, path: str) -> int:
        with self._mutex:
            parent, name = self._parent(path)
            node = self._lookup(path)
            if node.is_dir:
                raise _err(errno.EISDIR)
            del parent.children[name]
            self.journal.append(("unlink", path))
            return 0

    def rename(self, old: str, new: str) -> int:
        with self._mutex:
            old_parent, old_name = self._parent(old)
            node = self._lookup(old)
            new_parent, new_name = self._parent(new)
            target = new_parent.children.get(new_name)
            if target is not None and target.is_dir and target.children:
                raise _err(errno.ENOTEMPTY)
            del old_parent.children[old_name]
            new_parent.children[new_name] = node
            self.journal.append(("rename", old, new))
            return 0

    def chmod(self, path: str | None, mode: int) -> int:
        with self._mutex:
            node = self._node(path)
            node.mode = (node.mode & ~0o7777) | (mode & 0o7777)
            if path is not None:
                self.journal.append(("chmod", path, mode))
            return 0

    def chown(self, path: str | None, uid: int, gid: int) -> int:
        return 0

    def utimens(self, path: str | None, times: tuple[int, int] | None = None) -> int:
        with self._mutex:
            node = self._node(path)
            atime, mtime = times or (time.time_ns(), time.time_ns())
            node.times = (atime, mtime, node.times[2])
            return 0


def _listen(fs: PowerCutFS) -> None:
    """Wait for the cut; if whoever started us goes away, the power goes too (nothing more becomes durable)."""
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["cut"]:
            fs.cut(words[1] if len(words) > 1 else "lose")
        elif words[:1] == ["arm"] and len(words) == 4:
            fs.arm(words[1], words[2], int(words[3]))
    fs.cut("lose")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.powercut_fs", description=__doc__.split("\n")[0])
    parser.add_argument("backing", type=Path)
    parser.add_argument("mountpoint", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    fs = PowerCutFS(args.backing.resolve(), args.seed)
    threading.Thread(target=_listen, args=(fs,), daemon=True, name="power").start()
    mfusepy.FUSE(fs, str(args.mountpoint), foreground=True, nothreads=True, use_ino=True, fsname="powercut",
                 allow_other=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
