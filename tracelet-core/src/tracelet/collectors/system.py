"""The system collector: CPU, memory, this process, and NVIDIA GPUs when NVML is available."""

from __future__ import annotations

import logging
from typing import Any

from tracelet.plugins import CollectorPlugin

logger = logging.getLogger("tracelet")
GB = 1e9


class SystemCollector(CollectorPlugin):
    """Samples every ``metrics_interval`` seconds (GPUs too, unless ``track_gpu`` is off)."""

    def __init__(self) -> None:
        super().__init__()
        self._process: Any = None
        self._gpus: list[Any] = []
        self._nvml: Any = None

    def start(self) -> None:
        """Prime the CPU counters and find the GPUs."""
        import psutil

        self.interval = float(self.config.get("metrics_interval", self.interval))
        self._process = psutil.Process()
        psutil.cpu_percent(None)
        self._process.cpu_percent(None)
        if self.config.get("track_gpu", True):
            self._gpus = self._find_gpus()

    def _find_gpus(self) -> list[Any]:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as error:  # no pynvml, no driver, no GPU: nothing to sample
            logger.debug("tracelet: no NVIDIA GPU sampling (%r)", error)
            return []
        self._nvml = pynvml
        return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]

    def collect(self) -> dict[str, float]:
        """One sample: ``cpu_percent``, ``memory_*``, ``process_*`` and ``gpu<i>_*``."""
        import psutil

        memory = psutil.virtual_memory()
        sample = {
            "cpu_percent": psutil.cpu_percent(None),
            "memory_percent": memory.percent,
            "memory_used_gb": memory.used / GB,
            "process_cpu_percent": self._process.cpu_percent(None),
            "process_rss_gb": self._process.memory_info().rss / GB,
        }
        for index, handle in enumerate(self._gpus):
            sample.update(self._gpu_sample(index, handle))
        return sample

    def _gpu_sample(self, index: int, handle: Any) -> dict[str, float]:
        nvml = self._nvml
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        prefix = f"gpu{index}_"
        sample = {
            prefix + "utilization_percent": float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
            prefix + "memory_used_gb": memory.used / GB,
            prefix + "memory_total_gb": memory.total / GB,
            prefix + "memory_percent": 100.0 * memory.used / memory.total,
        }
        try:
            sample[prefix + "temperature_c"] = float(nvml.nvmlDeviceGetTemperature(handle, 0))
            sample[prefix + "power_w"] = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
        except nvml.NVMLError:  # not every board reports these
            pass
        return sample

    def stop(self) -> None:
        """Release NVML."""
        if self._nvml is not None:
            self._nvml.nvmlShutdown()
            self._nvml = None
