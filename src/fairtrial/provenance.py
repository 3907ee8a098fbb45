"""What a trial ran on: code state, environment, hardware. Captured for every trial.

The run collects it once (it does not change between trials of one run) and the ledger stores
it once under its hash; each trial points at it. The task checksum, spec hash and derived seeds
are recorded on the trial row itself.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import re
import shlex
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
#: Prefixes of further variables that change results or speed (libraries' own settings).
RELEVANT_PREFIXES = (
    "CUDA_",
    "CUBLAS_",
    "CUDNN_",
    "NCCL_",
    "NVIDIA_",
    "OMP_",
    "MKL_",
    "OPENBLAS_",
    "BLIS_",
    "KMP_",
    "PYTORCH_",
    "TORCH_",
    "XLA_",
    "JAX_",
    "TF_",
    "HF_",
    "TOKENIZERS_",
    "FAIRTRIAL_",
)
#: Variables that decide which code and libraries are loaded.
CODE_PATH_ENV = ("PYTHONPATH", "LD_LIBRARY_PATH", "LD_PRELOAD", "DYLD_LIBRARY_PATH")
#: Parts of names whose values are never recorded (they end up in bundles that get shared).
SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY", "CREDENTIAL", "AUTH", "COOKIE")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+):[^@/\s]+@")
_MAX_DIFF = 1_000_000  # characters of uncommitted diff kept; more is marked truncated
#: Recipe files kept in a code snapshot: at most this many files and bytes (more are listed
#: as skipped, never silently dropped).
SNAPSHOT_MAX_FILES = 200
SNAPSHOT_MAX_BYTES = 2_000_000
_SKIP_DIRS = {".git", ".fairtrial", ".venv", "venv", "__pycache__", "node_modules", ".tox"}


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
        "env": captured_env(),
    }


def captured_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment variables that may change a result, secrets left out.

    Exact names (:data:`RELEVANT_ENV`, :data:`CODE_PATH_ENV`) and library prefixes
    (:data:`RELEVANT_PREFIXES`); a variable whose name contains a word of
    :data:`SECRET_WORDS` is never recorded, and passwords inside URLs are masked.
    """
    env = dict(os.environ if environ is None else environ)
    out: dict[str, str] = {}
    for name, value in env.items():
        wanted = name in RELEVANT_ENV or name in CODE_PATH_ENV or name.startswith(RELEVANT_PREFIXES)
        if not wanted or any(word in name.upper() for word in SECRET_WORDS):
            continue
        out[name] = _URL_PASSWORD.sub(r"\1:***@", value)
    return dict(sorted(out.items()))


def environment_lock() -> dict[str, Any]:
    """The environment lock: interpreter, platform and every installed distribution's version.

    ``sha256`` identifies the package set (two environments with the same hash have the same
    distributions at the same versions); ``requirements`` is the same set in pip's format.
    """
    pkgs = packages()
    blob = "\n".join(f"{k}=={v}" for k, v in pkgs.items())
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": pkgs,
        "sha256": hashlib.sha256(blob.encode()).hexdigest(),
        "requirements": blob + "\n",
    }


def _module_file(module: str, base_dir: Path | None) -> Path | None:
    """The file ``module`` is imported from by a fresh worker (the spec folder first), found
    without importing it and regardless of what this process has already imported."""
    from importlib.machinery import PathFinder

    origin = None
    if base_dir is not None:
        search: list[str] | None = [str(base_dir)]
        parts = module.split(".")
        for i in range(len(parts)):
            found = PathFinder.find_spec(".".join(parts[: i + 1]), search)
            if found is None:
                break
            if i == len(parts) - 1:
                origin = found.origin
            search = list(found.submodule_search_locations or [])
    if origin is None:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        origin = spec.origin if spec is not None else None
    if not origin or not Path(origin).is_file():
        return None
    return Path(origin).resolve()


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def code_snapshot(recipe: str | None, command: str | None, base_dir: Path | None) -> dict[str, Any]:
    """The recipe's files, with their contents, to store with the trial's provenance.

    * ``module:function`` recipe: the module's file; when it lies in the spec's folder, every
      ``.py`` file of that folder (recursively, skipping hidden and environment folders), and
      when it lies in a package elsewhere, the ``.py`` files of the package's folder.
    * command recipe: each word of the command that names a file in the spec's folder.

    Files in the spec's folder are keyed by their path relative to it (``files``); files
    elsewhere (an installed package, a built-in recipe) by their module path (``external``).
    At most :data:`SNAPSHOT_MAX_FILES` files and :data:`SNAPSHOT_MAX_BYTES` bytes are kept;
    the rest are listed in ``skipped``. Returns ``{"files": {rel: bytes}, "external": {rel:
    bytes}, "skipped": [...], "recipe": ..., "command": ..., "module": ...}``.
    """
    base = base_dir.resolve() if base_dir is not None else None
    candidates: list[tuple[str, str, Path]] = []  # (where, key, path)
    module_name = None
    if recipe is not None:
        module_name = recipe.partition(":")[0]
        mod_file = _module_file(module_name, base)
        if mod_file is not None:
            if base is not None and _inside(mod_file, base):
                for path in sorted(base.rglob("*.py")):
                    rel = path.relative_to(base)
                    if any(part in _SKIP_DIRS or part.startswith(".") for part in rel.parts[:-1]):
                        continue
                    candidates.append(("files", rel.as_posix(), path))
            else:
                depth = module_name.count(".")
                root = mod_file.parents[depth] if depth < len(mod_file.parents) else mod_file
                key = mod_file.relative_to(root).as_posix()
                candidates.append(("external", key, mod_file))
                if (mod_file.parent / "__init__.py").exists():
                    for path in sorted(mod_file.parent.glob("*.py")):
                        if path != mod_file:
                            candidates.append(("external", path.relative_to(root).as_posix(), path))
    if command is not None and base is not None:
        try:
            words = shlex.split(command)
        except ValueError:
            words = command.split()
        for word in words:
            if "{" in word or word.startswith("-"):
                continue
            path = (base / word).resolve()
            if _inside(path, base) and path.is_file():
                candidates.append(("files", path.relative_to(base).as_posix(), path))
    out: dict[str, Any] = {
        "recipe": recipe,
        "command": command,
        "module": module_name,
        "files": {},
        "external": {},
        "skipped": [],
    }
    total = 0
    for where, key, path in candidates:
        if key in out[where]:
            continue
        try:
            content = path.read_bytes()
        except OSError as exc:
            out["skipped"].append(f"{key}: cannot read ({exc.strerror})")
            continue
        kept = len(out["files"]) + len(out["external"])
        if kept >= SNAPSHOT_MAX_FILES or total + len(content) > SNAPSHOT_MAX_BYTES:
            out["skipped"].append(f"{key}: over the snapshot limit ({len(content)} bytes)")
            continue
        total += len(content)
        out[where][key] = content
    return out
