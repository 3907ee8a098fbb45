"""What a trial ran on: code state, environment, hardware. Captured for every trial.

The run collects it once (it does not change between trials of one run) and the ledger stores
it once under its hash; each trial points at it. The task checksum, spec hash and derived seeds
are recorded on the trial row itself.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import fairtrial

#: Environment variables that change results or speed; their values are recorded.
RELEVANT_ENV = (
    "CUDA_VISIBLE_DEVICES",
    "CUBLAS_WORKSPACE_CONFIG",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "PYTHONHASHSEED",
    "TF32_OVERRIDE",
    "NVIDIA_TF32_OVERRIDE",
    "TORCH_DETERMINISTIC",
    "XLA_FLAGS",
    "VIRTUAL_ENV",
    "CONDA_DEFAULT_ENV",
)
_MAX_DIFF = 1_000_000  # characters of uncommitted diff kept; more is marked truncated


def _run(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state(path: Path) -> dict[str, Any]:
    """Commit, branch, and uncommitted diff (tracked changes + untracked file names)."""
    root = _run(["git", "rev-parse", "--show-toplevel"], path)
    if root is None:
        return {"repo": None}
    top = Path(root.strip())
    diff = _run(["git", "diff", "HEAD"], top) or ""
    untracked = (_run(["git", "ls-files", "--others", "--exclude-standard"], top) or "").split()
    return {
        "repo": str(top),
        "commit": (_run(["git", "rev-parse", "HEAD"], top) or "").strip() or None,
        "branch": (_run(["git", "rev-parse", "--abbrev-ref", "HEAD"], top) or "").strip(),
        "dirty": bool(diff or untracked),
        "diff": diff[:_MAX_DIFF],
        "diff_truncated": len(diff) > _MAX_DIFF,
        "untracked": untracked[:1000],
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def gpus() -> list[dict[str, Any]]:
    """GPUs via torch if it is already imported, else nvidia-smi if present; never imports torch."""
    torch: Any = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return [
            {
                "name": torch.cuda.get_device_name(i),
                "memory": torch.cuda.get_device_properties(i).total_memory,
                "cuda": torch.version.cuda,
            }
            for i in range(torch.cuda.device_count())
        ]
    out = _run(
        ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
        Path.cwd(),
    )
    if not out:
        return []
    rows = []
    for line in out.strip().splitlines():
        name, mem, driver = (p.strip() for p in line.split(","))
        rows.append({"name": name, "memory": mem, "driver": driver})
    return rows


def packages() -> dict[str, str]:
    """Every installed distribution and its version (the environment lock)."""
    out: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out[name.lower()] = dist.version
    return dict(sorted(out.items()))


def collect(code_dir: Path | None = None) -> dict[str, Any]:
    """Everything about this process's environment that a trial's result may depend on."""
    code_dir = code_dir or Path.cwd()
    return {
        "fairtrial": fairtrial.__version__,
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "executable": sys.executable,
        "os": platform.platform(),
        "hostname": platform.node(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": memory_bytes(),
        "gpus": gpus(),
        "git": git_state(code_dir),
        "packages": packages(),
        "env": {k: os.environ[k] for k in RELEVANT_ENV if k in os.environ},
    }
