"""Shared Terraform state: the GCS backend (partial configuration) and terraform/state-bucket.sh,
which creates the state bucket. The script runs with a fake `gcloud` first on PATH (a recorder:
no cloud here); every flag it passes is then checked against the real gcloud's own help for that
command, and the lifecycle it sets is read back from the file it handed over."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import hcl2
import pytest

from tests.terraform.test_terraform import TF, _clean

FAKE_GCLOUD = """#!/usr/bin/env bash
# Fake gcloud: records its arguments (and a copy of any --lifecycle-file) and answers `describe`
# with "not found" unless BUCKET_EXISTS=1.
n=$(find "$RECORD" -name '*.args' | wc -l)
printf '%s\\n' "$@" > "$RECORD/$n.args"
for arg in "$@"; do
  case "$arg" in --lifecycle-file=*) cp "${arg#--lifecycle-file=}" "$RECORD/$n.lifecycle" ;; esac
done
if [ "$3" = describe ] && [ "${BUCKET_EXISTS:-0}" != 1 ]; then exit 1; fi
exit 0
"""


def _run(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], list[list[str]], Path]:
    folder = tmp_path / "terraform"
    folder.mkdir()
    shutil.copy(TF / "state-bucket.sh", folder / "state-bucket.sh")
    bin_dir, record = tmp_path / "bin", tmp_path / "record"
    bin_dir.mkdir()
    record.mkdir()
    (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
    (bin_dir / "gcloud").chmod(0o755)
    done = subprocess.run(
        ["bash", str(folder / "state-bucket.sh"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RECORD": str(record), **env},
    )
    calls = [p.read_text().splitlines() for p in sorted(record.glob("*.args"), key=lambda p: int(p.stem))]
    return done, calls, record


def _real_gcloud_flags(*command: str) -> set[str]:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        if os.environ.get("CI") == "true":
            pytest.fail("gcloud is missing on a CI machine")
        pytest.skip("gcloud is not installed")
    done = subprocess.run([gcloud, *command, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(re.findall(r"--[a-z][a-z-]*", done.stdout))


def test_the_configuration_keeps_its_state_in_gcs_given_at_init() -> None:
    with (TF / "versions.tf").open() as handle:
        (terraform,) = _clean(hcl2.load(handle))["terraform"]
    assert terraform["backend"] == [{"gcs": {}}]  # bucket and prefix come from backend.hcl


def test_a_new_bucket_is_created_private_versioned_and_pruned(tmp_path: Path) -> None:
    done, calls, record = _run(tmp_path, "my-project", "", "EU", KEEP="5")
    assert done.returncode == 0, done.stderr
    assert [call[:3] for call in calls] == [
        ["storage", "buckets", "describe"],
        ["storage", "buckets", "create"],
        ["storage", "buckets", "update"],
    ]
    create, update = calls[1], calls[2]
    assert create[3] == update[3] == "gs://my-project-videogen-tfstate"
    assert {
        "--location=EU",
        "--project=my-project",
        "--uniform-bucket-level-access",
        "--public-access-prevention",
    } <= set(create)
    assert {"--versioning", "--uniform-bucket-level-access", "--public-access-prevention"} <= set(update)
    for index in (1, 2):
        rules = json.loads((record / f"{index}.lifecycle").read_text())["rule"]
        assert rules == [{"action": {"type": "Delete"}, "condition": {"isLive": False, "numNewerVersions": 5}}]
    with (tmp_path / "terraform" / "backend.hcl").open() as handle:
        backend = _clean(hcl2.load(handle))
    assert backend == {"bucket": "my-project-videogen-tfstate", "prefix": "videogen"}


def test_an_existing_bucket_is_brought_into_line_not_recreated(tmp_path: Path) -> None:
    done, calls, _ = _run(tmp_path, "p", "team-state", BUCKET_EXISTS="1", TF_STATE_PREFIX="staging")
    assert done.returncode == 0, done.stderr
    assert [call[2] for call in calls] == ["describe", "update"]
    assert "--versioning" in calls[1] and calls[1][3] == "gs://team-state"
    assert 'prefix = "staging"' in (tmp_path / "terraform" / "backend.hcl").read_text()


def test_bad_usage_is_refused_before_any_gcloud_call(tmp_path: Path) -> None:
    done, calls, _ = _run(tmp_path)
    assert done.returncode != 0 and "usage" in done.stderr and calls == []


def test_every_flag_the_script_passes_is_one_the_real_gcloud_takes(tmp_path: Path) -> None:
    _, calls, _ = _run(tmp_path, "p")
    for call in calls:
        command = call[:3]
        used = {arg.split("=")[0] for arg in call if arg.startswith("--")}
        unknown = used - _real_gcloud_flags(*command)
        assert not unknown, f"gcloud {' '.join(command)} has no {sorted(unknown)}"


def test_make_deploy_asks_for_shared_state_or_an_explicit_local_choice() -> None:
    makefile = (TF.parent / "Makefile").read_text()
    deploy = makefile[makefile.index("\ntf-init:") : makefile.index("\ndeploy:")]
    assert "-backend-config=backend.hcl" in deploy and "TF_STATE),local" in deploy
    assert 'backend \\"local\\"' in deploy or 'backend "local"' in deploy
    gitignored = (TF.parent / ".gitignore").read_text().split()
    assert {"terraform/backend.hcl", "terraform/backend_override.tf"} <= set(gitignored)
