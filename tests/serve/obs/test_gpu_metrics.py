"""GPU metrics from NVML: absent (and no error) without a GPU; with a fake NVML, the values."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client import generate_latest

from serve.obs.metrics import Metrics


class FakeNvml:
    """The part of pynvml's interface the exporter uses, for two GPUs."""

    NVML_TEMPERATURE_GPU = 0

    def __init__(self) -> None:
        self.initialized = False

    def nvmlInit(self) -> None:
        self.initialized = True

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return b"NVIDIA L4"

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return SimpleNamespace(gpu=[87, 3][handle], memory=10)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return SimpleNamespace(used=[20 * 2**30, 2**30][handle], total=24 * 2**30, free=0)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        assert sensor == self.NVML_TEMPERATURE_GPU
        return [71, 40][handle]


def test_no_gpu_means_no_gpu_metrics_and_no_error() -> None:
    text = generate_latest(Metrics().registry).decode()  # the real pynvml, no driver here
    assert "videogen_gpu_utilization_ratio" not in text
    assert "videogen_requests_total" in text or "videogen_ready" in text  # the rest is still there


def test_fake_nvml_values_appear_with_their_labels() -> None:
    text = generate_latest(Metrics(nvml=FakeNvml()).registry).decode()
    assert 'videogen_gpu_utilization_ratio{gpu="0",name="NVIDIA L4"} 0.87' in text
    assert 'videogen_gpu_utilization_ratio{gpu="1",name="NVIDIA L4"} 0.03' in text
    assert 'videogen_gpu_memory_used_bytes{gpu="0",name="NVIDIA L4"} 2.147483648e+10' in text
    assert 'videogen_gpu_memory_total_bytes{gpu="1",name="NVIDIA L4"} 2.5769803776e+10' in text
    assert 'videogen_gpu_temperature_celsius{gpu="0",name="NVIDIA L4"} 71.0' in text


def test_a_failing_nvml_read_does_not_break_the_scrape() -> None:
    broken = FakeNvml()
    broken.nvmlDeviceGetCount = lambda: (_ for _ in ()).throw(RuntimeError("GPU fell off the bus"))  # type: ignore[method-assign]
    text = generate_latest(Metrics(nvml=broken).registry).decode()
    assert "videogen_gpu_utilization_ratio" not in text and "videogen_ready" in text
