"""The system collector: CPU (total and per core), memory and swap, disk and network I/O
rates, this process (CPU, RSS, threads, open files), and NVIDIA GPUs when NVML is
available. Every value is a number; the runner logs them as ``system/<key>``. On rank
zero of a distributed job, each sample also carries the other ranks' latest ones, as
``system/rank<r>/<key>`` (see :mod:`tracelet.distributed`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from tracelet.distributed import RankGatherer, current_rank
from tracelet.plugins import CollectorPlugin, report_once

logger = logging.getLogger("tracelet")
GB = 1e9
MB = 1e6


class SystemCollector(CollectorPlugin):
    """Samples every ``metrics_interval`` seconds (GPUs too, unless ``track_gpu`` is off)."""

    def __init__(self) -> None:
        super().__init__()
        self._process: Any = None
        self._gpus: list[Any] = []
        self._nvml: Any = None
        self._io: tuple[float, Any, Any] | None = None
        """When the I/O counters were last read, and what they said (for rates)."""
        self._other_ranks: RankGatherer | None = None

    def start(self) -> None:
        """Prime the CPU counters and find the GPUs."""
        import psutil

        self.interval = float(self.config.get("metrics_interval", self.interval))
        self._process = psutil.Process()
        psutil.cpu_percent(None)
        psutil.cpu_percent(None, percpu=True)
        self._process.cpu_percent(None)
        self._io = (time.monotonic(), _disk(psutil), _net(psutil))
        if self.config.get("track_gpu", True):
            self._gpus = self._find_gpus()
        rank = current_rank()
        if rank.distributed and rank.is_zero and not self.config.get("log_all_ranks"):
            self._other_ranks = RankGatherer(rank)

    def _find_gpus(self) -> list[Any]:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as error:  # no pynvml, no driver, no GPU: nothing to sample
            logger.debug("tracelet: no NVIDIA GPU sampling (%r)", error)
            return []
        self._nvml = pynvml
        try:
            count = pynvml.nvmlDeviceGetCount()
            return [pynvml.nvmlDeviceGetHandleByIndex(index) for index in range(count)]
        except pynvml.NVMLError as error:
            report_once("tracelet collector 'system'", f"cannot list the GPUs ({error!r})")
            return []

    def collect(self) -> dict[str, float]:
        """One sample: ``cpu_percent`` and ``cpu<i>_percent``, ``memory_*``, ``swap_*``,
        ``disk_*_mb_s`` and ``net_*_mb_s`` (rates since the last sample), ``process_*``
        and ``gpu<i>_*``."""
        import psutil

        memory = psutil.virtual_memory()
        swap = psutil.swap_memory()
        sample = {
            "cpu_percent": psutil.cpu_percent(None),
            "memory_percent": memory.percent,
            "memory_used_gb": memory.used / GB,
            "swap_percent": swap.percent,
            "swap_used_gb": swap.used / GB,
        }
        cores = psutil.cpu_percent(None, percpu=True)
        sample.update({f"cpu{i}_percent": value for i, value in enumerate(cores)})
        sample.update(self._io_rates(psutil))
        sample.update(self._process_sample())
        for index, handle in enumerate(self._gpus):
            try:
                sample.update(self._gpu_sample(index, handle))
            except self._nvml.NVMLError as error:  # the rest of the sample still counts
                report_once("tracelet collector 'system'", f"GPU {index} unreadable ({error!r})")
        if self._other_ranks is not None:
            sample.update(self._other_ranks.gather())
        return sample

    def _process_sample(self) -> dict[str, float]:
        process = self._process
        with process.oneshot():
            sample = {
                "process_cpu_percent": process.cpu_percent(None),
                "process_rss_gb": process.memory_info().rss / GB,
                "process_threads": float(process.num_threads()),
            }
            if hasattr(process, "num_fds"):  # POSIX: cheap, counts every open file
                sample["process_open_files"] = float(process.num_fds())
            else:
                sample["process_open_files"] = float(len(process.open_files()))
        return sample

    def _io_rates(self, psutil: Any) -> dict[str, float]:
        """Disk and network megabytes per second since the previous sample (none where
        the system has no such counters, as in some containers)."""
        now, disk, net = time.monotonic(), _disk(psutil), _net(psutil)
        assert self._io is not None
        then, last_disk, last_net = self._io
        self._io = (now, disk, net)
        seconds = max(now - then, 1e-6)
        rates = {}
        if disk is not None and last_disk is not None:
            rates["disk_read_mb_s"] = (disk.read_bytes - last_disk.read_bytes) / MB / seconds
            rates["disk_write_mb_s"] = (disk.write_bytes - last_disk.write_bytes) / MB / seconds
        if net is not None and last_net is not None:
            rates["net_sent_mb_s"] = (net.bytes_sent - last_net.bytes_sent) / MB / seconds
            rates["net_recv_mb_s"] = (net.bytes_recv - last_net.bytes_recv) / MB / seconds
        return {key: max(value, 0.0) for key, value in rates.items()}  # (counters reset)

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


def _disk(psutil: Any) -> Any:
    try:
        return psutil.disk_io_counters()
    except (RuntimeError, OSError):  # no disks to count
        return None


def _net(psutil: Any) -> Any:
    try:
        return psutil.net_io_counters()
    except (RuntimeError, OSError):
        return None
