"""The GCS weight cache: `python -m serve.cli.weights push|pull|verify`.

Layout: `gs://BUCKET/<model>/<revision>/<files...>` plus `manifest.json` (every file's path,
size and crc32c), written LAST by `push`, so a half-pushed prefix is never used. `pull` refuses
a prefix without a manifest, downloads in parallel to temporary names, verifies each file
against the manifest before renaming it into place, skips files already present and verified,
and writes its local copy of the manifest last: a directory is complete exactly when `verify`
accepts it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.api_core.exceptions import GoogleAPIError
from google.cloud import storage
from google.cloud.storage import transfer_manager

from models.ltx.recipes import MARKER, VARIANTS, declared_variant
from serve.io.checksums import file_crc32c
from serve.obs.logs import configure_logging

log = logging.getLogger("serve.cli.weights")

MANIFEST = "manifest.json"
LOCAL_MANIFEST = ".weights-manifest.json"
PARTIAL_SUFFIX = ".partial"
CHUNKED_ABOVE_BYTES = 64 * 1024 * 1024
CHUNK_BYTES = 32 * 1024 * 1024


# Weight formats a diffusers pipeline does not load when safetensors are there: hub repositories
# often carry both, and single-file checkpoints, upscalers or fp32 copies beside the folders.
HUB_IGNORED = ["*.bin", "*.pt", "*.pth", "*.ckpt", "*.gguf", "*.onnx", "*.msgpack", "*.h5", "*.md", "*.mp4", "*.gif"]


class CacheError(Exception):
    """The cache or a local copy is missing, incomplete or corrupt."""


def hub_patterns(model_index: dict[str, Any]) -> list[str]:
    """What `from_pretrained` reads of a diffusers repository: model_index.json and the folder of
    each component it names (a component is `name: [library, class]`), and nothing else."""
    if "_class_name" not in model_index:
        raise CacheError("model_index.json names no pipeline class (_class_name): not a diffusers repository")
    components = sorted(
        name
        for name, value in model_index.items()
        if not name.startswith("_") and isinstance(value, list) and len(value) == 2 and value[0] is not None
    )
    if not components:
        raise CacheError("model_index.json lists no components")
    return ["model_index.json", *(f"{name}/*" for name in components)]


def download_from_hub(hub_id: str, hub_revision: str, directory: Path) -> list[str]:
    """Only the files the repository's diffusers pipeline loads, into `directory` (needs hub access;
    not exercised in tests: there is none here). Returns the patterns used."""
    from huggingface_hub import hf_hub_download, snapshot_download

    index = Path(hf_hub_download(repo_id=hub_id, filename="model_index.json", revision=hub_revision))
    patterns = hub_patterns(json.loads(index.read_text()))
    snapshot_download(
        repo_id=hub_id,
        revision=hub_revision,
        local_dir=directory,
        allow_patterns=patterns,
        ignore_patterns=HUB_IGNORED,
    )
    return patterns


def declare_variant(directory: Path, variant: str) -> None:
    """Write what a checkpoint's configs cannot say (a distilled LTX-Video checkpoint) into the
    directory, as `videogen.json`, so it travels with the weights and the server runs its recipe."""
    if variant not in VARIANTS:
        raise CacheError(f"variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    (directory / MARKER).write_text(json.dumps({"variant": variant}) + "\n")


@dataclass(frozen=True)
class Entry:
    path: str
    size: int
    crc32c: str  # base64 of the big-endian CRC32C, the form GCS reports


def _entries(directory: Path) -> list[Entry]:
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != LOCAL_MANIFEST)
    return [Entry(p.relative_to(directory).as_posix(), p.stat().st_size, file_crc32c(p)) for p in files]


_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _prefix(model: str, revision: str) -> str:
    for name, value in (("model", model), ("revision", revision)):
        if not _MODEL.match(value) or ".." in value:
            raise CacheError(f"invalid {name} {value!r}: letters, digits, '.', '_' and '-' only")
    return f"{model}/{revision}/"


def _parse_manifest(text: str) -> list[Entry]:
    data = json.loads(text)
    entries = [Entry(f["path"], int(f["size"]), f["crc32c"]) for f in data["files"]]
    for entry in entries:
        if entry.path.startswith("/") or ".." in Path(entry.path).parts:
            raise CacheError(f"manifest names an unsafe path {entry.path!r}")
    return entries


def push(client: storage.Client, bucket: str, model: str, revision: str, source: Path) -> dict[str, Any]:
    """Upload `source` (a diffusers directory) and then its manifest; refuse to overwrite one."""
    prefix = _prefix(model, revision)
    bucket_ref = client.bucket(bucket)
    manifest_blob = bucket_ref.blob(prefix + MANIFEST)
    if manifest_blob.exists():
        raise CacheError(f"gs://{bucket}/{prefix}{MANIFEST} exists; revisions are immutable, push a new one")
    entries = _entries(source)
    if not entries:
        raise CacheError(f"{source} has no files")
    started = time.monotonic()

    def upload(entry: Entry) -> None:
        blob = bucket_ref.blob(prefix + entry.path)
        blob.crc32c = entry.crc32c  # the server rejects the upload if the bytes do not match
        blob.upload_from_filename(str(source / entry.path), checksum="crc32c")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(upload, entries))
    manifest = {
        "model": model,
        "revision": revision,
        "created": datetime.now(UTC).isoformat(),
        "files": [vars(e) for e in entries],
    }
    manifest_blob.upload_from_string(
        json.dumps(manifest, indent=1), content_type="application/json", if_generation_match=0
    )
    return _report("push", sum(e.size for e in entries), len(entries), time.monotonic() - started)


def _verified(path: Path, entry: Entry) -> bool:
    return path.is_file() and path.stat().st_size == entry.size and file_crc32c(path) == entry.crc32c


def pull(
    client: storage.Client, bucket: str, model: str, revision: str, dest: Path, *, workers: int = 8
) -> dict[str, Any]:
    """Make `dest` a verified copy of the cached revision, downloading only what is missing or wrong."""
    prefix = _prefix(model, revision)
    bucket_ref = client.bucket(bucket)
    manifest_blob = bucket_ref.blob(prefix + MANIFEST)
    if not manifest_blob.exists():
        raise CacheError(f"gs://{bucket}/{prefix} has no {MANIFEST}: not a complete cache entry, refusing it")
    manifest_text = manifest_blob.download_as_text()
    entries = _parse_manifest(manifest_text)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / LOCAL_MANIFEST).unlink(missing_ok=True)  # incomplete until every file is verified
    started = time.monotonic()
    todo = [e for e in entries if not _verified(dest / e.path, e)]
    small = [e for e in todo if e.size <= CHUNKED_ABOVE_BYTES]
    large = [e for e in todo if e.size > CHUNKED_ABOVE_BYTES]
    for entry in todo:
        (dest / entry.path).parent.mkdir(parents=True, exist_ok=True)

    def partial(entry: Entry) -> Path:
        return dest / (entry.path + PARTIAL_SUFFIX)

    pairs = [(bucket_ref.blob(prefix + e.path), str(partial(e))) for e in small]
    results = transfer_manager.download_many(pairs, worker_type="thread", max_workers=workers, raise_exception=True)
    for result in results:
        if isinstance(result, Exception):
            raise result
    for entry in large:
        blob = bucket_ref.get_blob(prefix + entry.path)  # chunking needs the object's size
        if blob is None:
            raise CacheError(f"{entry.path}: listed in the manifest but missing from the bucket")
        transfer_manager.download_chunks_concurrently(
            blob,
            str(partial(entry)),
            chunk_size=CHUNK_BYTES,
            worker_type="thread",
            max_workers=workers,
        )
    for entry in todo:
        if not _verified(partial(entry), entry):
            partial(entry).unlink(missing_ok=True)
            raise CacheError(f"{entry.path}: downloaded bytes do not match the manifest")
        os.replace(partial(entry), dest / entry.path)
    _write_atomically(dest / LOCAL_MANIFEST, manifest_text)
    report = _report("pull", sum(e.size for e in todo), len(todo), time.monotonic() - started)
    report["skipped_files"] = len(entries) - len(todo)
    return report


def verify(directory: Path) -> list[str]:
    """The problems with a pulled directory; empty when it is complete and intact."""
    manifest = directory / LOCAL_MANIFEST
    if not manifest.is_file():
        return [f"{manifest} is missing: the pull never completed"]
    problems = []
    for entry in _parse_manifest(manifest.read_text()):
        path = directory / entry.path
        if not path.is_file():
            problems.append(f"{entry.path}: missing")
        elif path.stat().st_size != entry.size:
            problems.append(f"{entry.path}: {path.stat().st_size} bytes, expected {entry.size}")
        elif file_crc32c(path) != entry.crc32c:
            problems.append(f"{entry.path}: crc32c mismatch")
    return problems


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + PARTIAL_SUFFIX)
    temporary.write_text(text)
    os.replace(temporary, path)


def _report(action: str, size: int, files: int, seconds: float) -> dict[str, Any]:
    report = {
        "action": action,
        "files": files,
        "bytes": size,
        "seconds": round(seconds, 3),
        "mb_per_s": round(size / 1e6 / seconds, 1) if seconds > 0 else None,
    }
    log.info(f"weights {action}", extra=report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve.cli.weights", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("push", "pull"):
        command = commands.add_parser(name)
        command.add_argument("--bucket", required=True)
        command.add_argument("--model", required=True)
        command.add_argument("--revision", required=True)
        command.add_argument("--dir", required=True, type=Path, help="source (push) or destination (pull)")
    commands.choices["pull"].add_argument("--workers", type=int, default=8)
    commands.choices["push"].add_argument(
        "--hub-id",
        help="first download this diffusers repository into --dir, only the files its pipeline loads "
        "(needs hub access), e.g. Lightricks/LTX-Video-0.9.1",
    )
    commands.choices["push"].add_argument("--hub-revision", default="main", help="the hub revision (default main)")
    commands.choices["push"].add_argument(
        "--variant",
        choices=VARIANTS,
        help=f"declare the checkpoint's variant in {MARKER} (LTX-Video 0.9.5+: distilled ones run their 8-step "
        "recipe); default: distilled when --hub-id names a distilled repository",
    )
    commands.add_parser("verify").add_argument("--dir", required=True, type=Path)
    args = parser.parse_args(argv)
    configure_logging("INFO", model_libraries=False)
    try:
        if args.command == "verify":
            problems = verify(args.dir)
            for problem in problems:
                log.error("verify failed", extra={"problem": problem})
            return 1 if problems else 0
        client = storage.Client()
        if args.command == "push":
            if args.hub_id:
                patterns = download_from_hub(args.hub_id, args.hub_revision, args.dir)
                log.info("downloaded from the hub", extra={"hub_id": args.hub_id, "patterns": patterns})
            variant = args.variant or (declared_variant(args.hub_id) if args.hub_id else None)
            if variant is not None:
                declare_variant(args.dir, variant)
                log.info("declared the variant", extra={"variant": variant, "file": MARKER})
            push(client, args.bucket, args.model, args.revision, args.dir)
        else:
            pull(client, args.bucket, args.model, args.revision, args.dir, workers=args.workers)
    except (CacheError, GoogleAPIError) as exc:
        log.error(str(exc))
        print(f"error: {exc}", file=sys.stderr)  # the last line, quoted by startup.sh
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
