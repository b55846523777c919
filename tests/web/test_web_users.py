"""Technician accounts: the users file, its hashes, and ``meter-gateway user add|remove|list``."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from gateway.cli import main
from gateway.web.users import (
    ARGON2_MEMORY_KIB,
    USERS_FILE,
    BadPassword,
    BadUsername,
    UserError,
    UsersFileError,
    UserStore,
)

PY = sys.executable
PASSWORD = "correct horse battery"


def _cli(*args: str, stdin: str | None = None, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "gateway", "user", *args, "--data-dir", str(data_dir)], input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)


def _main(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str, stdin: str = "",
          data_dir: Path) -> tuple[int, str, str]:
    """The command in process (a subprocess costs seconds of imports on a loaded box): code, stdout, stderr."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(["user", *args, "--data-dir", str(data_dir)])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_password_is_stored_as_an_argon2id_hash_in_a_private_file(tmp_path: Path) -> None:
    data = tmp_path / "data"  # tmp_path itself holds the test's line locks
    store = UserStore(data)
    store.set_password("anna", PASSWORD)
    path = data / USERS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert PASSWORD not in text
    stored = json.loads(text)["users"]["anna"]["hash"]
    assert stored.startswith(f"$argon2id$v=19$m={ARGON2_MEMORY_KIB},t=2,p=1$")
    assert store.verify("anna", PASSWORD) is not None
    assert store.verify("anna", PASSWORD + "x") is None
    assert store.verify("bob", PASSWORD) is None
    assert sorted(p.name for p in data.iterdir()) == [".users.lock", USERS_FILE], "no temporary file left"


def test_names_and_passwords_are_checked_before_anything_is_written(tmp_path: Path) -> None:
    store = UserStore(tmp_path)
    for name in ("", "Anna", "a b", "-x", "x" * 33, "anna;rm", "ä"):
        with pytest.raises(BadUsername):
            store.set_password(name, PASSWORD)
    for password in ("short", "anna", " ANNA  ", "x" * 1025):
        with pytest.raises(BadPassword):
            store.set_password("anna", password.ljust(12) if password.strip().lower() == "anna" else password)
    assert not (tmp_path / USERS_FILE).exists()
    store.set_password("anna", PASSWORD)
    with pytest.raises(UserError, match="--replace"):
        store.set_password("anna", "another long password")
    with pytest.raises(UserError, match="no user 'bob'"):
        store.remove("bob")


def test_the_daemon_sees_changes_at_once_and_refuses_a_file_others_can_read(tmp_path: Path) -> None:
    daemon, cli = UserStore(tmp_path), UserStore(tmp_path)
    assert daemon.users() == {}
    cli.set_password("anna", PASSWORD)
    first = daemon.users()["anna"]
    cli.set_password("anna", "a brand new password", replace=True)
    assert daemon.users()["anna"].stamp != first.stamp, "a new password is a new stamp (old sessions end)"
    assert daemon.users()["anna"].created == first.created
    (tmp_path / USERS_FILE).chmod(0o644)
    assert daemon.users() == {}
    assert "chmod 600" in (daemon.problem or "")
    (tmp_path / USERS_FILE).chmod(0o600)
    assert set(daemon.users()) == {"anna"}
    (tmp_path / USERS_FILE).write_text("{not json")
    assert daemon.users() == {}
    assert "damaged" in (daemon.problem or "")
    with pytest.raises(UsersFileError):
        cli.set_password("bob", PASSWORD)


def test_a_hash_made_with_other_parameters_verifies_and_is_upgraded(tmp_path: Path) -> None:
    store = UserStore(tmp_path)
    store.set_password("anna", PASSWORD)
    doc = json.loads((tmp_path / USERS_FILE).read_text())
    doc["users"]["anna"]["hash"] = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    (tmp_path / USERS_FILE).write_text(json.dumps(doc))
    assert store.verify("anna", PASSWORD) is not None
    assert f"m={ARGON2_MEMORY_KIB}," in store.users()["anna"].password_hash


def test_user_add_reads_the_password_from_stdin_never_from_the_command_line(tmp_path: Path) -> None:
    added = _cli("add", "anna", "--password-stdin", stdin=f"{PASSWORD}\n", data_dir=tmp_path)
    assert added.returncode == 0, added.stderr
    assert "user anna added" in added.stdout
    assert UserStore(tmp_path).verify("anna", PASSWORD) is not None
    as_argument = _cli("add", "bob", PASSWORD, data_dir=tmp_path)
    assert as_argument.returncode == 2, "there is no way to give a password as an argument"
    assert "bob" not in UserStore(tmp_path).users()


def test_user_add_remove_list(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    def run(*args: str, stdin: str = "") -> tuple[int, str, str]:
        return _main(capsys, monkeypatch, *args, stdin=stdin, data_dir=tmp_path)

    code, _, err = run("add", "bob")
    assert code == 2
    assert "--password-stdin" in err, "without a terminal it says how scripts give the password"
    code, _, err = run("add", "bob", "--password-stdin", stdin="short\n")
    assert code == 2
    assert "at least 12 characters" in err
    assert run("add", "anna", "--password-stdin", stdin=f"{PASSWORD}\n")[0] == 0
    code, _, err = run("add", "anna", "--password-stdin", stdin=f"{PASSWORD}\n")
    assert code == 2
    assert "--replace" in err
    code, out, _ = run("add", "anna", "--replace", "--password-stdin", stdin="a brand new password\n")
    assert code == 0
    assert "new password" in out
    assert UserStore(tmp_path).verify("anna", "a brand new password") is not None
    code, out, _ = run("list")
    assert code == 0
    assert out.split()[0] == "anna"
    assert "$argon2" not in out
    assert run("remove", "anna")[0] == 0
    code, _, err = run("remove", "anna")
    assert code == 2
    assert "no user 'anna'" in err
    code, _, err = run("list")
    assert code == 0
    assert "no users yet" in err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the file to another user")
def test_run_as_root_the_file_stays_the_gateway_users(tmp_path: Path) -> None:
    data = tmp_path / "state"
    data.mkdir(mode=0o700)
    os.chown(data, 65534, 65534)  # the service user owns its data dir; an installer runs the command with sudo
    UserStore(data).set_password("anna", PASSWORD)
    for name in (USERS_FILE, ".users.lock"):
        st = (data / name).stat()
        assert (st.st_uid, st.st_gid) == (65534, 65534), name
