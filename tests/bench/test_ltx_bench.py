"""`make bench` works on a CPU at tiny size: every variant in its own process, a JSON report and a table
with spread, memory and each switch's status (no timing asserts); `--plan` from the meta device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import ltx


def test_bench_runs_all_three_variants_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ltx.json"
    argv = ["--size", "tiny", "--height", "64", "--width", "96", "--frames", "9", "--steps", "3", "--runs", "2"]
    assert ltx.main([*argv, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    names = [v["name"] for v in report["variants"]]
    assert names == ["plain", "exact", "exact-graphs", "fast-cache", "fast-fp8", "fast"]
    plain, exact, graphs, cache, fp8, fast = report["variants"]
    assert graphs["latent_relative_error"] == 0.0  # CUDA graphs need CUDA (and compile): nothing changes here
    assert "fp8=off" in fp8["optimizations"] and fp8["psnr_db_vs_exact"] == float("inf")  # fp8 needs CUDA
    assert cache["psnr_db_vs_exact"] is not None  # measured against exact mode
    assert plain["latent_relative_error"] is None
    assert exact["latent_relative_error"] == 0.0  # on a CPU exact mode changes nothing
    assert fast["latent_relative_error"] is not None and "first_block_cache:0.05=on" in fast["optimizations"]
    for variant in report["variants"]:
        assert set(variant["median_video_seconds"]) >= {"encode_prompt", "denoise", "decode", "encode_mp4", "total"}
        assert variant["runs"] == 2 and variant["median_step_seconds"] > 0
        assert variant["p90_step_seconds"] >= variant["median_step_seconds"] > 0
    table = capsys.readouterr().out
    assert "| plain |" in table and "| fast |" in table and "latent error vs plain" in table
    assert "first_block_cache:0.05=on" in table.split("| fast |")[1]  # the switches are in the table
    assert report["isolated"] is True
    assert {"torch", "diffusers", "transformers", "cuda", "cudnn", "driver"} <= set(report["versions"])
    # Each variant ran in a fresh process: exact mode's latents equal plain's only if nothing leaked.
    assert report["variants"][1]["latent_relative_error"] == 0.0


def test_the_plan_counts_the_real_components_on_the_meta_device(tmp_path: Path) -> None:
    assert ltx.main(["--plan", "--out", str(tmp_path / "ltx.json")]) == 0
    plan = json.loads((tmp_path / "ltx_plan.json").read_text())
    params = list(plan["parameters"].values())
    assert 4.7e9 < params[0] < 4.8e9 and 1.9e9 < params[1] < 2.0e9  # T5-XXL encoder, 2B transformer
    assert plan["l4_text_encoder_offloaded"] is True
    assert all(size < 22 for size in plan["stages_gib"].values())
    assert 0.93e9 < params[2] < 0.94e9  # the 0.9.1 VAE: 1.74 GiB in bf16
    verdicts = plan["l4_checkpoints"]
    assert [v.split(":")[0] for v in verdicts.values()] == ["served", "served", "refused"]


def test_the_offload_copy_measurement_runs_the_real_visit(tmp_path: Path) -> None:
    """`--offload-copy` (a GPU figure) on the CPU: the same code, a small size, figures written."""
    assert ltx.main(["--offload-copy", "0.25", "--runs", "2", "--out", str(tmp_path / "ltx.json")]) == 0
    report = json.loads((tmp_path / "ltx_offload_copy.json").read_text())
    assert report["gib"] == 0.25 and report["runs"] == 5
    assert report["pinned_visit_seconds"]["p50"] >= 0


def test_full_size_pipelines_for_each_recipe_build_on_the_meta_device() -> None:
    """`--size full --recipe ...` on a GPU: the 2B transformer with each version's VAE in its pipeline
    (built here on the meta device: shapes, no memory)."""
    import torch

    with torch.device("meta"):
        pipes = {recipe: ltx.build_full_pipeline(recipe=recipe) for recipe in ltx.RECIPES}
    assert {name: type(pipe).__name__ for name, pipe in pipes.items()} == {
        "0.9.1": "LTXPipeline",
        "0.9.5": "LTXConditionPipeline",
        "distilled": "LTXConditionPipeline",
    }
    assert pipes["0.9.1"].vae.config.decoder_inject_noise[0] is True
    assert "LTXVideo095DownBlock3D" in pipes["distilled"].vae.config.down_block_types
    assert pipes["distilled"].scheduler.config.use_dynamic_shifting is False


def test_the_prepared_gpu_script_runs_a_stage_and_reports_it(tmp_path: Path) -> None:
    """bench/gpu_figures.sh, the one script a GPU session runs: here one stage at a tiny size."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "SMALL": "1", "RESULTS": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(root / "bench" / "gpu_figures.sh"), "offload"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "## offload (" in done.stdout and "| HostResident visit" in done.stdout
    assert json.loads((tmp_path / "ltx_offload_copy.json").read_text())["gib"] == 0.25  # --offload-copy names it
    bad = subprocess.run(
        ["bash", str(root / "bench" / "gpu_figures.sh"), "nope"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and "unknown stage nope" in bad.stderr
