"""`meter-gateway identity` run as a user other than the data dir's owner never leaves a key the daemon cannot read."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway import identity
from gateway.errors import ConfigError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="changes file owners: needs root (CI runs as root)")

NOBODY = pwd.getpwnam("nobody")


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A directory another user can reach (pytest's own is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="mg-owner-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _as_nobody(work: Callable[[], object]) -> str:
    """Run ``work`` in a child that became ``nobody``; what it raised (or 'ok')."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery from here on, just the answer down the pipe
        os.close(read)
        try:
            os.setgroups([])
            os.setgid(NOBODY.pw_gid)
            os.setuid(NOBODY.pw_uid)
            work()
            answer = "ok"
        except BaseException as exc:  # reported to the parent
            answer = f"{type(exc).__name__}: {exc}"
        os.write(write, answer.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        answer = fh.read().decode()
    os.waitpid(pid, 0)
    return answer


def _service_dir(tmp_path: Path) -> Path:
    """A data dir like /var/lib/meter-gateway: 0700, owned by the service user (nobody here)."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    os.chown(data, NOBODY.pw_uid, NOBODY.pw_gid)
    return data


def test_root_creates_the_key_for_the_data_dirs_owner_and_says_so(tmp_path: Path) -> None:
    data = _service_dir(tmp_path)
    with capture_logs() as logs:
        key = identity.load_or_create(data)
    info = identity.key_path(data).stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (NOBODY.pw_uid, NOBODY.pw_gid, 0o600)
    assert [e["event"] for e in logs] == ["gateway_key_created_for_owner"]
    assert "sudo -u nobody" in logs[0]["detail"]
    # ... and the daemon's user reads that very key
    assert _as_nobody(lambda: sys.exit(0) if identity.load_or_create(data) == key else sys.exit(1)) == \
        "SystemExit: 0"


def test_another_user_is_refused_instead_of_creating_a_key_the_daemon_cannot_read(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)  # even where nobody may write, the key is not nobody's to make
    answer = _as_nobody(lambda: identity.load_or_create(data))
    assert answer.startswith("ConfigError:"), answer
    assert "belongs to root" in answer
    assert "sudo -u root meter-gateway identity" in answer
    assert not identity.key_path(data).exists()


def test_a_key_the_daemon_cannot_read_is_refused_with_the_chown_that_fixes_it(tmp_path: Path) -> None:
    data = _service_dir(tmp_path)
    key = identity.key_path(data)
    with capture_logs():
        identity.load_or_create(data)
    os.chown(key, 0, 0)  # as `sudo meter-gateway identity` left it before the installer repaired keys
    answer = _as_nobody(lambda: identity.load_or_create(data))
    assert answer.startswith("ConfigError:"), answer
    assert f"chown nobody: {key}" in answer
    with capture_logs() as logs:  # root can read it, and is told the daemon cannot
        identity.load(key)
    assert [e["event"] for e in logs] == ["gateway_key_owner_differs"]
    key.write_text("not a key\n")
    with pytest.raises(ConfigError, match="does not hold a valid gateway key"):
        identity.load(key)
