"""What a trial ran on: code state, environment, hardware. Captured for every trial.

The run collects it once (it does not change between trials of one run) and the ledger stores
it once under its hash; each trial points at it. The task checksum, spec hash and derived seeds
are recorded on the trial row itself.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from fairtrial._version import __version__

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
        "fairtrial": __version__,
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


#: (path, package, mtime, size) -> the names it imports: a run hashes its code more than once,
#: and a built-in recipe's closure is most of fairtrial (parsing it takes about a second)
_IMPORTS: dict[tuple[str, str, int, int], list[str]] = {}


def _imported_names(path: Path, package: str) -> list[str]:
    """Module names ``path`` imports (statically: every ``import`` and ``from`` anywhere in it,
    relative ones resolved against ``package``); ``from m import n`` also names ``m.n``, which
    is a module when ``n`` is a submodule. Remembered while the file's time and size stay."""
    try:
        st = path.stat()
    except OSError:
        return []
    key = (str(path), package, st.st_mtime_ns, st.st_size)
    if key not in _IMPORTS:
        _IMPORTS[key] = _parse_imports(path, package)
    return list(_IMPORTS[key])


def _parse_imports(path: Path, package: str) -> list[str]:
    import ast

    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return []
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                up = len(parts) - (node.level - 1)
                if up < 0:
                    continue
                base = ".".join([*parts[:up], *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            if base:
                names.append(base)
            names.extend(f"{base}.{a.name}" if base else a.name for a in node.names)
    return names


def module_source(module: str, root: Path) -> Path | None:
    """The file ``module`` is imported from when ``root`` is first on the path, if in ``root``."""
    parts = module.split(".")
    for candidate in (
        root.joinpath(*parts).with_suffix(".py"),
        root.joinpath(*parts, "__init__.py"),
    ):
        if candidate.is_file():
            return candidate.resolve()
    return None


def import_closure(start: Path, root: Path) -> list[Path]:
    """``start`` and every module under ``root`` that it imports, directly or through others.

    Static (the ``import`` statements of the source): what a trial runs is known before it
    runs, so a trial's identity can include it. ``root`` is the folder imports resolve
    against (the spec's folder, or an installed package's parent); modules outside it (numpy,
    fairtrial itself) are not the recipe's code. Parent packages' ``__init__.py`` files count:
    importing ``pkg.mod`` runs them.
    """
    seen: dict[Path, None] = {}
    todo = [start.resolve()]
    while todo:
        path = todo.pop()
        if path in seen or not _inside(path, root):
            continue
        seen[path] = None
        rel = path.relative_to(root).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        package = ".".join(parts if path.name == "__init__.py" else parts[:-1])
        for i in range(1, len(parts)):  # the parent packages' __init__ files
            init = root.joinpath(*parts[:i], "__init__.py")
            if init.is_file():
                todo.append(init.resolve())
        for name in _imported_names(path, package):
            found = module_source(name, root)
            if found is not None:
                todo.append(found)
    return sorted(seen)


def code_snapshot(
    recipe: str | None,
    command: str | None,
    base_dir: Path | None,
    task: str | None = None,
) -> dict[str, Any]:
    """The code a trial runs, with its contents: what its identity hashes and bundles carry.

    * ``module:function`` recipe: the module's file and every module it imports from the same
      root (:func:`import_closure`): the spec's folder for the user's own code, the package's
      folder for an installed one (a built-in recipe and its helpers).
    * command recipe: each word of the command that names a file in the spec's folder, and for
      Python files among them, what they import from that folder.
    * ``module:function`` task in the spec's folder: its module and what that imports (the
      data a trial sees is also pinned by the task checksum; the code rebuilds it).

    Only these files: other files of the spec's folder (notes, unpublished experiments) are
    neither hashed nor packed. Files in the spec's folder are keyed by their path relative to
    it (``files``); files elsewhere by their module path (``external``). At most
    :data:`SNAPSHOT_MAX_FILES` files and :data:`SNAPSHOT_MAX_BYTES` bytes are kept; the rest
    are listed in ``skipped``. Returns ``{"files": {rel: bytes}, "external": {rel: bytes},
    "skipped": [...], "recipe": ..., "command": ..., "module": ...}``.
    """
    base = base_dir.resolve() if base_dir is not None else None
    candidates: list[tuple[str, str, Path]] = []  # (where, key, path)

    def local(start: Path) -> None:
        assert base is not None
        for path in import_closure(start, base):
            candidates.append(("files", path.relative_to(base).as_posix(), path))

    module_name = None
    if recipe is not None:
        module_name = recipe.partition(":")[0]
        mod_file = _module_file(module_name, base)
        if mod_file is not None:
            if base is not None and _inside(mod_file, base):
                local(mod_file)
            else:
                depth = module_name.count(".")
                root = mod_file.parents[depth] if depth < len(mod_file.parents) else mod_file
                # what the module imports from its own package (a built-in recipe's helpers),
                # not the whole installed library it belongs to
                package_dir = mod_file.parent
                for path in import_closure(mod_file, root):
                    if path == mod_file or (
                        _inside(path, package_dir) and path.name != "__init__.py"
                    ):
                        candidates.append(("external", path.relative_to(root).as_posix(), path))
    # "external:NAME" (fairtrial.tasks.external) names data the recipe loads, not code
    if task is not None and base is not None and ":" in task and not task.startswith("external:"):
        task_file = _module_file(task.partition(":")[0], base)
        if task_file is not None and _inside(task_file, base):
            local(task_file)
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
                if path.suffix == ".py":
                    local(path)
                else:
                    candidates.append(("files", path.relative_to(base).as_posix(), path))
    out: dict[str, Any] = {
        "recipe": recipe,
        "command": command,
        "module": module_name,
        "files": {},
        "external": {},
        "skipped": [],
        # every file's sha256, kept or not: an edit of a file too large to keep still shows
        "digests": {},
    }
    total = 0
    for where, key, path in candidates:
        if f"{where}/{key}" in out["digests"]:
            continue
        try:
            content = path.read_bytes()
        except OSError as exc:
            out["skipped"].append(f"{key}: cannot read ({exc.strerror})")
            out["digests"][f"{where}/{key}"] = "unreadable"
            continue
        out["digests"][f"{where}/{key}"] = hashlib.sha256(content).hexdigest()
        kept = len(out["files"]) + len(out["external"])
        if kept >= SNAPSHOT_MAX_FILES or total + len(content) > SNAPSHOT_MAX_BYTES:
            out["skipped"].append(f"{key}: over the snapshot limit ({len(content)} bytes)")
            continue
        total += len(content)
        out[where][key] = content
    for where in ("files", "external", "digests"):
        out[where] = dict(sorted(out[where].items()))
    return out


def code_hash(snapshot: dict[str, Any]) -> str:
    """One hash of the code a snapshot holds: the recipe reference, the command, and the path
    and sha256 of every file it found (kept in the snapshot or over its limits).

    Part of every trial's identity: any edit of any file the recipe imports gives new trials.
    """
    blob = {
        "recipe": snapshot.get("recipe"),
        "command": snapshot.get("command"),
        "files": snapshot.get("digests") or {},
    }
    text = json.dumps(blob, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
