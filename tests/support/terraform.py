"""Terraform's own evaluator on the parts of terraform/ that read variables only (variables.tf and
models.tf): `terraform console` in a scratch folder holding copies of them, no provider needed.
Variable validations run as they would at `plan`, so a refused value comes back as an error."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

TF = Path(__file__).resolve().parents[2] / "terraform"
EXAMPLE = TF / "terraform.tfvars.example"
VARIABLE_ONLY_FILES = ("variables.tf", "models.tf")


class Refused(Exception):
    """Terraform refused the variables (a validation failed); the message is its error text."""


def require_terraform() -> str:
    found = shutil.which("terraform")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("terraform is missing on a CI machine")
    pytest.skip("terraform is not installed")


def console(expression: str, tfvars: str) -> Any:
    """`expression` (e.g. `local.models`) evaluated with `tfvars` (HCL text) by Terraform."""
    terraform = require_terraform()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for name in VARIABLE_ONLY_FILES:
            shutil.copy(TF / name, folder / name)
        (folder / "test.tfvars").write_text(tfvars)
        done = subprocess.run(
            [terraform, "console", "-no-color", "-var-file=test.tfvars"],
            input=f"jsonencode({expression})\n",
            capture_output=True,
            text=True,
            cwd=folder,
            timeout=60,
            env={**os.environ, "TF_CLI_CONFIG_FILE": os.devnull, "CHECKPOINT_DISABLE": "1"},
        )
    if "Invalid value for variable" in done.stderr or done.returncode != 0:
        # The text before Terraform's crash report (its console exits that way on a refused value).
        text = done.stderr.split("!!!!")[0]
        raise Refused(" ".join(re.sub(r"[│╷╵─├]", " ", text).split()))
    return json.loads(json.loads(done.stdout.strip().splitlines()[-1]))
