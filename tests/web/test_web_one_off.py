"""One-off reads name a profile: built-in, configured, or a .toml under [web] profiles_dir — nothing else.

Before, ``?profile=`` took any path the daemon could read: ``/dev/zero`` grew the memory without
bound, and a file with key = value lines came back, values included, in the 400's error.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx

from gateway.web.oneoff import MAX_PROFILE_BYTES
from tests.web.conftest import Site

SECRET = "s3cr3t-Value-0042-do-not-echo"
"""Content of the files that must never come back in an answer."""
PROFILE_ANSWER_S = 5.0
"""Refusals are immediate; this only bounds a daemon stuck reading a device file (the old behaviour)."""


def _secret_toml(path: Path) -> Path:
    # Shaped so that profile validation would quote it: an id that breaks the id pattern, a bad type.
    path.write_text(f'id = "{SECRET}"\nmodel = ["{SECRET}"]\nmax_registers_per_read = "{SECRET}"\n')
    path.chmod(0o600)
    return path


async def _read(site: Site, profile: str, unit: int = 1) -> httpx.Response:
    async with httpx.AsyncClient(base_url=site.url, timeout=PROFILE_ANSWER_S,
                                 headers={"Authorization": f"Bearer {site.token}"}) as http:
        return await http.get("/api/v1/buses/line/read", params={"unit": unit, "profile": profile})


async def test_device_files_are_never_read(site: Site) -> None:
    started = time.monotonic()
    for device in ("/dev/zero", "/dev/urandom", "/dev/stdin", "/proc/self/environ", "/proc/kcore"):
        answer = await _read(site, device)
        assert answer.status_code == 400, (device, answer.text)
        assert "not under the profiles directory" in answer.json()["error"]
    fifo = site.profiles_dir / "pipe.toml"
    os.mkfifo(fifo)
    answer = await _read(site, "pipe.toml")
    assert answer.status_code == 400
    assert "not a regular file" in answer.json()["error"], "a FIFO is refused without blocking on it"
    os.symlink("/dev/zero", site.profiles_dir / "zero.toml")
    answer = await _read(site, "zero.toml")
    assert answer.status_code == 400, "a symlink out of the directory is refused"
    assert time.monotonic() - started < PROFILE_ANSWER_S


async def test_files_outside_the_profiles_dir_are_refused_without_their_content(site: Site, tmp_path: Path) -> None:
    outside = _secret_toml(tmp_path / "secret.toml")
    key = site.data_dir / "gateway.key"
    key.write_text(f"S{SECRET}\n")
    for ref in (str(outside), "../secret.toml", "../data/web.token", str(key), str(site.data_dir / "web.token"),
                f"{site.profiles_dir}/../secret.toml", "sub/../../secret.toml"):
        answer = await _read(site, ref)
        assert answer.status_code == 400, (ref, answer.text)
        assert SECRET not in answer.text, ref
        assert site.token not in answer.text, ref


async def test_bad_files_inside_the_profiles_dir_are_refused_without_their_content(site: Site) -> None:
    _secret_toml(site.profiles_dir / "notaprofile.toml")
    (site.profiles_dir / "garbage.toml").write_bytes(b"\xff\xfe" + SECRET.encode() + b" = = =")
    (site.profiles_dir / "deep.toml").write_text("x = " + "[" * 5000 + "]" * 5000)
    (site.profiles_dir / "big.toml").write_bytes(b"# " + b"x" * MAX_PROFILE_BYTES + b"\n")
    (site.profiles_dir / "dir.toml").mkdir()
    (site.profiles_dir / "passwd").write_text(f"root:{SECRET}\n")
    os.symlink("passwd", site.profiles_dir / "passwd.toml")
    expected = {"notaprofile.toml": "not a valid firmware profile", "garbage.toml": "is not TOML",
                "deep.toml": "is not TOML", "big.toml": "larger than 256 KiB", "dir.toml": "not a regular file",
                "passwd": "unknown firmware profile", "passwd.toml": "ends in .toml", "./passwd": "ends in .toml",
                "missing.toml": "no profile file", "a\x00b.toml": "not a file name"}
    for ref, message in expected.items():
        answer = await _read(site, ref)
        assert answer.status_code == 400, (ref, answer.text)
        assert message in answer.json()["error"], (ref, answer.json())
        assert SECRET not in answer.text, ref


async def test_a_profile_file_in_the_profiles_dir_is_read(site: Site) -> None:
    builtin = Path(__file__).parents[2] / "firmware_profiles" / "eastron-sdm630.toml"
    text = builtin.read_text().replace('id = "eastron-sdm630"', 'id = "site-sdm630"')
    assert 'id = "site-sdm630"' in text
    (site.profiles_dir / "site").mkdir()
    (site.profiles_dir / "site" / "sdm630.toml").write_text(text)
    answer = await _read(site, "site/sdm630.toml")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["profile"] == "site-sdm630"
    assert body["values"]["frequency"] == 50.0
    assert (await _read(site, "eastron-sdm630")).status_code == 200, "built-in ids as before"
    unknown = await _read(site, "no-such-model")
    assert unknown.status_code == 400
    assert "built-in profiles:" in unknown.json()["error"]


async def test_without_a_profiles_dir_only_ids_are_accepted(site: Site) -> None:
    site.ctx.profiles_dir = None
    (site.profiles_dir / "x.toml").write_text("")
    answer = await _read(site, "x.toml")
    assert answer.status_code == 400
    assert "set [web] profiles_dir" in answer.json()["error"]
    assert (await _read(site, "eastron-sdm630")).status_code == 200
