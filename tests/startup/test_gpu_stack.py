"""The torch a VM installs can run on the driver of the image the VMs boot: the CUDA version of
the wheel pinned in requirements.txt, read from PyPI's own metadata of that wheel for the VMs'
platform (a `pip install --dry-run --report` that `make test` caches in .cache/; no download of
the wheel), against the driver branch in terraform's image_family (`...-nvidia-580`) and NVIDIA's
table of minimum drivers (startup/cuda_drivers.json)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.terraform import Refused, console
from tests.terraform.test_terraform import config

ROOT = Path(__file__).resolve().parents[2]
TABLE = json.loads((ROOT / "startup" / "cuda_drivers.json").read_text())["minimum_driver_branch"]
REPORT = Path(os.environ.get("TORCH_WHEEL_REPORT", ROOT / ".cache" / "torch-wheel-report.json"))


def _pinned_torch() -> str:
    (version,) = re.findall(r"^torch==([\w.+-]+)\s*$", (ROOT / "requirements.txt").read_text(), flags=re.M)
    return version


def _report() -> dict[str, Any]:
    if not REPORT.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{REPORT} is missing; `make test` writes it")
        pytest.skip(f"{REPORT} is missing (make test writes it from PyPI's metadata)")
    (item,) = json.loads(REPORT.read_text())["install"]
    return dict(item["metadata"])


def cuda_of(requires_dist: list[str]) -> str:
    """The CUDA toolkit a torch wheel was built for, from its dependencies on NVIDIA's wheels."""
    for requirement in requires_dist:
        found = re.match(r"cuda-toolkit(?:\[[^\]]*\])?==(\d+)\.(\d+)", requirement) or re.match(
            r"nvidia-cuda-runtime-cu\d+==(\d+)\.(\d+)", requirement
        )
        if found:
            return f"{found[1]}.{found[2]}"
    raise AssertionError(f"no CUDA runtime among the wheel's dependencies: {requires_dist}")


def driver_branch(image_family: str) -> int:
    found = re.search(r"-nvidia-(\d+)$", image_family)
    assert found, f"image_family {image_family} does not name its driver branch (...-nvidia-NNN)"
    return int(found[1])


def runs_on(cuda: str, image_family: str) -> bool:
    assert cuda in TABLE, f"CUDA {cuda} is not in startup/cuda_drivers.json: add its minimum driver"
    return driver_branch(image_family) >= TABLE[cuda]


def test_the_pinned_torch_wheel_runs_on_the_vm_images_driver() -> None:
    metadata = _report()
    assert metadata["name"] == "torch" and metadata["version"] == _pinned_torch().split("+")[0]
    cuda = cuda_of(metadata["requires_dist"])
    family = config()["variable"]["image_family"]["default"]
    assert runs_on(cuda, family), f"torch {metadata['version']} is a CUDA {cuda} build; {family} cannot run it"


@pytest.mark.parametrize(
    ("requires", "family", "ok"),
    [
        # torch 2.13.0 from PyPI (CUDA 13.0) on the image family the deployment used to boot.
        (
            ['cuda-toolkit[cublas,cudart]==13.0.3; platform_system == "Linux"'],
            "common-cu128-ubuntu-2404-nvidia-570",
            False,
        ),
        (
            ['cuda-toolkit[cublas,cudart]==13.0.3; platform_system == "Linux"'],
            "common-cu129-ubuntu-2404-nvidia-580",
            True,
        ),
        # torch 2.10.0 from PyPI, the last CUDA 12.8 default build.
        (
            ['nvidia-cuda-runtime-cu12==12.8.90; platform_system == "Linux"'],
            "common-cu128-ubuntu-2404-nvidia-570",
            True,
        ),
    ],
)
def test_the_check_refuses_a_build_newer_than_the_driver(requires: list[str], family: str, ok: bool) -> None:
    assert runs_on(cuda_of(requires), family) is ok


def test_the_image_family_variable_refuses_an_older_driver() -> None:
    variable = config()["variable"]["image_family"]
    conditions = " ".join(v["condition"] for v in variable.get("validation", []))
    wanted = TABLE[cuda_of(_report()["requires_dist"])]
    assert f">= {wanted}" in conditions, conditions


@pytest.mark.parametrize(
    ("family", "ok"),
    [
        ("common-cu129-ubuntu-2404-nvidia-580", True),
        ("common-cu128-ubuntu-2404-nvidia-570", False),
        ("my-own-image", False),
    ],
)
def test_terraform_refuses_an_image_whose_driver_cannot_run_the_wheel(family: str, ok: bool) -> None:
    tfvars = f'project_id = "p"\nimage_family = "{family}"\n'
    if ok:
        assert console("var.image_family", tfvars) == family
    else:
        with pytest.raises(Refused, match="driver branch"):
            console("var.image_family", tfvars)
