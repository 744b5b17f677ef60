"""Sample the GPUs' busy share (NVML utilisation: the share of time a kernel ran) every 0.1 s,
with Unix times, until stopped (SIGTERM or SIGINT). One CSV line per GPU per sample:

    python -m scripts.gpu_busy busy.csv &

Writes a header only when NVML is not there (no NVIDIA driver): the render benchmark then reports
no busy figure instead of failing.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m scripts.gpu_busy OUT.csv", file=sys.stderr)
        return 2
    out = Path(args[0])
    stop = False

    def request_stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with open(out, "w", buffering=1) as handle:
        handle.write("unix_time,gpu,busy_percent\n")
        try:
            import pynvml  # noqa: PLC0415 - nvidia-ml-py, on GPU machines only

            pynvml.nvmlInit()
            handles = [
                pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())
            ]
        except Exception as err:  # noqa: BLE001 - no NVML: no samples
            print(f"gpu_busy: no NVML ({err}); no samples", file=sys.stderr)
            return 0
        while not stop:
            now = time.time()
            for index, device in enumerate(handles):
                busy = pynvml.nvmlDeviceGetUtilizationRates(device).gpu
                handle.write(f"{now:.3f},{index},{busy}\n")
            time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
