"""Prometheus metrics, in a registry of the app's own, served on a port of their own."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("serve.obs.metrics")

PREFIX = "videogen"
_DURATION_BUCKETS = (1, 2.5, 5, 10, 20, 30, 45, 60, 90, 120, 180, 240, 300, 450, 600, 900, 1800)
_STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)


class _CudaMemory(Collector):
    """GPU memory, read at scrape time; nothing at all on a machine without CUDA."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        import torch

        if not torch.cuda.is_available():
            return
        allocated = GaugeMetricFamily(
            f"{PREFIX}_gpu_memory_allocated_bytes", "Bytes held by tensors", labels=["device"]
        )
        reserved = GaugeMetricFamily(
            f"{PREFIX}_gpu_memory_reserved_bytes", "Bytes reserved by torch", labels=["device"]
        )
        peak = GaugeMetricFamily(f"{PREFIX}_gpu_memory_peak_bytes", "Peak bytes held by tensors", labels=["device"])
        for index in range(torch.cuda.device_count()):
            label = [str(index)]
            allocated.add_metric(label, torch.cuda.memory_allocated(index))
            reserved.add_metric(label, torch.cuda.memory_reserved(index))
            peak.add_metric(label, torch.cuda.max_memory_allocated(index))
        yield from (allocated, reserved, peak)


class _Nvml(Collector):
    """GPU utilisation, memory and temperature from NVML (nvidia-ml-py), read at scrape time.
    Without a driver (a CPU machine) NVML does not start and these metrics are simply absent."""

    def __init__(self, nvml: Any = None) -> None:
        self._nvml = nvml
        self._ready: bool | None = None

    def _start(self) -> bool:
        if self._ready is None:
            try:
                if self._nvml is None:
                    import pynvml

                    self._nvml = pynvml
                self._nvml.nvmlInit()
                self._ready = True
            except Exception as exc:  # no driver, no library: no GPU metrics, not an error
                log.info("NVML unavailable; no GPU utilisation metrics", extra={"reason": str(exc)})
                self._ready = False
        return self._ready

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if not self._start():
            return
        nvml = self._nvml
        labels = ["gpu", "name"]
        utilization = GaugeMetricFamily(f"{PREFIX}_gpu_utilization_ratio", "GPU busy fraction (NVML)", labels=labels)
        used = GaugeMetricFamily(f"{PREFIX}_gpu_memory_used_bytes", "GPU memory in use (NVML)", labels=labels)
        total = GaugeMetricFamily(f"{PREFIX}_gpu_memory_total_bytes", "GPU memory in all (NVML)", labels=labels)
        temperature = GaugeMetricFamily(f"{PREFIX}_gpu_temperature_celsius", "GPU temperature (NVML)", labels=labels)
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                name = nvml.nvmlDeviceGetName(handle)
                label = [str(index), name.decode() if isinstance(name, bytes) else str(name)]
                utilization.add_metric(label, nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                used.add_metric(label, memory.used)
                total.add_metric(label, memory.total)
                temperature.add_metric(label, nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
        except Exception as exc:  # a failing GPU must not break the scrape of everything else
            log.warning("NVML read failed", extra={"error": str(exc)})
            return
        yield from (utilization, used, total, temperature)


class Metrics:
    """Everything the server exports."""

    def __init__(self, nvml: Any = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "HTTP request duration",
            ["route"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(f"{PREFIX}_queue_depth", "Requests waiting for the GPU", registry=r)
        self.busy = Gauge(f"{PREFIX}_gpu_busy", "1 while a generation runs", registry=r)
        self.generations = Counter(f"{PREFIX}_generations", "Generations by outcome", ["outcome"], registry=r)
        self.generation_seconds = Histogram(
            f"{PREFIX}_generation_duration_seconds",
            "From the GPU taking a request to the stored video",
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            f"{PREFIX}_stage_duration_seconds", "Seconds per stage", ["stage"], buckets=_STAGE_BUCKETS, registry=r
        )
        self.rejected = Counter(f"{PREFIX}_rejected", "Requests turned away before the GPU", ["reason"], registry=r)
        self.ready = Gauge(f"{PREFIX}_ready", "1 when /health is 200", registry=r)
        self.job_wait_seconds = Histogram(
            f"{PREFIX}_job_wait_seconds",
            "From a job's submission to a worker starting it (queue wait, cold starts included)",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
            registry=r,
        )
        self.jobs = Counter(f"{PREFIX}_jobs", "Jobs by event: submitted, and each outcome", ["event"], registry=r)
        ProcessCollector(registry=r)  # process_start_time_seconds: restarts show as its changes
        r.register(_CudaMemory())
        r.register(_Nvml(nvml))
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    def observe_stages(self, timings: dict[str, float]) -> None:
        for stage, seconds in timings.items():
            self.stage_seconds.labels(stage).observe(seconds)

    def serve(self, host: str, port: int) -> int:
        """Start the metrics listener; return the port it bound (useful with port 0)."""
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        bound = self.port = int(self._server.server_port)
        log.info("metrics listening", extra={"host": host, "port": bound})
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
