"""The wheelhouse: every wheel the server's environment needs, for the VMs' platform and Python, so
that a VM installs with `pip --no-index` and boots without PyPI (`python -m serve.cli.wheelhouse`).

- `build`: `pip download` the bundle's requirements into `<out>/<hash>.tar`, where `<hash>` is the
  requirements hash startup.sh keys the environment by; prints the path.
- `push`: upload it to `gs://BUCKET/wheelhouse/<hash>.tar`, where startup.sh looks (metadata
  attribute `wheelhouse`); an object already there with other content is never overwritten.

Every failure ends with one plain line on stderr, `error: <what is wrong>`.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path

from google.api_core import exceptions as gexc

from serve.io.checksums import file_crc32c
from serve.io.gcs import storage_client

ROOT = Path(__file__).resolve().parents[2]
# In the order startup.sh hashes them (`requirements_hash` there); the second without dependencies.
REQUIREMENTS = ("requirements.txt", "requirements-nodeps.txt")
NO_DEPS = frozenset({"requirements-nodeps.txt"})
# The VMs: Ubuntu 24.04 (the Deep Learning VM image and the gateway image) has Python 3.12 on x86_64.
VM_PYTHON = "3.12"
VM_PLATFORM = "manylinux_2_28_x86_64"
PREFIX = "wheelhouse"


class WheelhouseError(Exception):
    """The wheelhouse cannot be built or pushed."""


def requirements_hash(root: Path) -> str:
    """What startup.sh computes: sha256 of the requirement files, concatenated in order; 16 hex."""
    digest = hashlib.sha256()
    for name in REQUIREMENTS:
        path = root / name
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def download_command(
    requirements: Path, dest: Path, *, python_version: str | None, platform: str | None, no_deps: bool
) -> list[str]:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(dest), "-r", str(requirements)]
    if no_deps:
        command.append("--no-deps")
    if python_version or platform:
        # Another interpreter's or platform's wheels: pip cannot build sdists for it.
        command.append("--only-binary=:all:")
    if python_version:
        command += ["--python-version", python_version]
    if platform:
        command += ["--platform", platform]
    return command


def build(root: Path, out_dir: Path, *, python_version: str | None, platform: str | None) -> Path:
    """Download every wheel into a tar named by the requirements hash; return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{requirements_hash(root)}.tar"
    with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
        wheels = Path(scratch) / "wheels"
        wheels.mkdir()
        for name in REQUIREMENTS:
            if not (root / name).is_file():
                continue
            command = download_command(
                root / name, wheels, python_version=python_version, platform=platform, no_deps=name in NO_DEPS
            )
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
                raise WheelhouseError(f"pip download -r {name} failed: {last}")
        partial = target.with_name(target.name + ".partial")
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            for wheel in sorted(wheels.iterdir()):
                info = tar.gettarinfo(str(wheel), arcname=wheel.name)
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                with wheel.open("rb") as handle:
                    tar.addfile(info, handle)
        partial.replace(target)
    return target


def push(client: object, bucket: str, path: Path) -> str:
    """Upload `path` as gs://bucket/wheelhouse/<name>; the same content already there is kept."""
    blob = client.bucket(bucket).blob(f"{PREFIX}/{path.name}")  # type: ignore[attr-defined]
    uri = f"gs://{bucket}/{blob.name}"
    crc = file_crc32c(path)
    try:
        blob.upload_from_filename(str(path), if_generation_match=0, checksum="crc32c")
        return f"uploaded {uri}"
    except gexc.PreconditionFailed:
        blob.reload()
        if blob.crc32c == crc and blob.size == path.stat().st_size:
            return f"already there: {uri}"
        raise WheelhouseError(f"{uri} exists with other content; it is never overwritten") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serve.cli.wheelhouse", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_ = commands.add_parser("build", help="download the wheels into OUT/<hash>.tar; prints its path")
    build_.add_argument("--out", type=Path, default=Path("dist/wheelhouse"))
    build_.add_argument("--python-version", default=VM_PYTHON, help=f"the VMs' Python (default {VM_PYTHON})")
    build_.add_argument("--platform", default=VM_PLATFORM, help=f"the VMs' platform tag (default {VM_PLATFORM})")
    build_.add_argument("--here", action="store_true", help="for this interpreter and machine instead of the VMs")
    push_ = commands.add_parser("push", help="upload OUT/<hash>.tar to gs://BUCKET/wheelhouse/")
    push_.add_argument("--bucket", required=True, help="the weights bucket (terraform output weights_bucket)")
    push_.add_argument("--out", type=Path, default=Path("dist/wheelhouse"))
    push_.add_argument("--endpoint", default=None, help="a Cloud Storage emulator's URL")
    push_.add_argument("--project", default=None)
    return parser


def main(argv: Iterable[str] | None = None) -> int:
    args = _parser().parse_args(None if argv is None else list(argv))
    try:
        if args.command == "build":
            python_version: str | None = None if args.here else args.python_version
            platform: str | None = None if args.here else args.platform
            print(build(ROOT, args.out, python_version=python_version, platform=platform))
        else:
            path = args.out / f"{requirements_hash(ROOT)}.tar"
            if not path.is_file():
                raise WheelhouseError(f"{path} does not exist: run `make wheelhouse` first")
            print(push(storage_client(endpoint=args.endpoint, project=args.project), args.bucket, path))
    except (WheelhouseError, OSError, gexc.GoogleAPIError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
