"""What machine a benchmark ran on: printed in the header of every table (figures differ by up to
1.6x between the CPU models one machine kind can be; ratios measured in one process carry over)."""
import os
import platform


def cpu_model():
    """The CPU's model name (Linux /proc/cpuinfo; platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def blas_description():
    """e.g. 'OpenBLAS 0.3.31, 2 threads, Haswell kernels' (threadpoolctl, when installed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threads = os.environ.get("OPENBLAS_NUM_THREADS", "all cores")
        kernels = os.environ.get("OPENBLAS_CORETYPE", "auto-detected")
        return f"BLAS threads {threads}, OPENBLAS_CORETYPE {kernels}"
    for info in threadpool_info():
        if info.get("user_api") == "blas":
            return (f"{info.get('internal_api')} {info.get('version')}, {info.get('num_threads')} "
                    f"threads, {info.get('architecture')} kernels")
    return "BLAS unknown"


def header():
    """One line: CPU model, cores, NumPy and its BLAS."""
    import numpy as np
    return (f"CPU: {cpu_model()}, {os.cpu_count()} cores; NumPy {np.__version__} "
            f"({blas_description()})")
