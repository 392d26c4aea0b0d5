"""serve.cli.wheelhouse: its name is the hash startup.sh keys the environment by (computed by the
script's own function), its download command targets the VMs, and a push never overwrites. The
sandboxed boot (tests/startup) installs from a real wheelhouse with every package index unreachable."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from serve.cli import wheelhouse
from tests.support.emulators import GcsEmulator

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "startup" / "startup.sh"


def _script_hash(app_dir: Path) -> str:
    """startup.sh's own requirements_hash function, cut out of the script and run by bash."""
    function = subprocess.run(
        ["sed", "-n", "/^requirements_hash() {/,/^}/p", str(SCRIPT)], capture_output=True, text=True, check=True
    ).stdout
    assert function.startswith("requirements_hash()")
    done = subprocess.run(
        ["bash", "-c", f'{function}\nAPP_DIR="$1" requirements_hash', "bash", str(app_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_the_wheelhouse_is_named_by_the_hash_startup_sh_computes(tmp_path: Path) -> None:
    assert wheelhouse.requirements_hash(ROOT) == _script_hash(ROOT)
    (tmp_path / "requirements.txt").write_text("a==1\n")
    only_one = wheelhouse.requirements_hash(tmp_path)
    assert only_one == _script_hash(tmp_path)
    (tmp_path / "requirements-nodeps.txt").write_text("b==2\n")
    assert wheelhouse.requirements_hash(tmp_path) == _script_hash(tmp_path) != only_one


def test_the_download_targets_the_vms_python_and_platform_with_wheels_only(tmp_path: Path) -> None:
    command = wheelhouse.download_command(
        tmp_path / "requirements-nodeps.txt",
        tmp_path,
        python_version="3.12",
        platform="manylinux_2_28_x86_64",
        no_deps=True,
    )
    assert command[1:4] == ["-m", "pip", "download"]
    assert "--only-binary=:all:" in command and "--no-deps" in command
    assert command[command.index("--python-version") + 1] == "3.12"
    assert command[command.index("--platform") + 1] == "manylinux_2_28_x86_64"
    here = wheelhouse.download_command(tmp_path / "r.txt", tmp_path, python_version=None, platform=None, no_deps=False)
    assert "--only-binary=:all:" not in here and "--platform" not in here


def test_a_push_uploads_once_and_never_overwrites(gcs_emulator: GcsEmulator, tmp_path: Path) -> None:
    client = gcs_emulator.client()
    client.create_bucket("wheels-test")
    archive = tmp_path / "0123456789abcdef.tar"
    archive.write_bytes(b"wheels, one")
    assert (
        wheelhouse.push(client, "wheels-test", archive) == "uploaded gs://wheels-test/wheelhouse/0123456789abcdef.tar"
    )
    assert wheelhouse.push(client, "wheels-test", archive).startswith("already there")
    archive.write_bytes(b"wheels, another")
    with pytest.raises(wheelhouse.WheelhouseError, match="never overwritten"):
        wheelhouse.push(client, "wheels-test", archive)
    blob = client.bucket("wheels-test").blob("wheelhouse/0123456789abcdef.tar")
    assert blob.download_as_bytes() == b"wheels, one"


def test_a_failed_download_says_which_file_and_why(tmp_path: Path) -> None:
    root = tmp_path / "app"
    root.mkdir()
    (root / "requirements.txt").write_text("this-package-does-not-exist-anywhere==0.0.0\n")
    with pytest.raises(wheelhouse.WheelhouseError, match=r"pip download -r requirements.txt failed"):
        wheelhouse.build(root, tmp_path / "out", python_version=None, platform=None)
    assert not list((tmp_path / "out").glob("*.tar"))
