"""Build the wheelhouse the GPU check kit installs from, on a machine with a package registry.

    .venv/bin/python benchmarks/gpu/build_wheelhouse.py --dry-run  # the plan, nothing fetched
    .venv/bin/python benchmarks/gpu/build_wheelhouse.py            # into benchmarks/gpu/wheelhouse

What travels: every distribution the project needs at run time (``pyproject.toml``'s
dependencies and what they require, followed through this environment's installed metadata, so
the versions are the ones the tests pass with), for CPython 3.12 on manylinux x86_64, except:

- torch and what only torch needs: the GPU machine brings its own CUDA build;
- what the GPU image already holds at a version our requirements accept (``gpu_image_packages.txt``,
  or a ``pip freeze`` of the target given with ``--present``); exact pins (``==``) travel unless
  the image's version is known to match;
- what the checks never use: kedro-viz, and MLflow's server and UI: ``mlflow-skinny`` with
  SQLAlchemy and Alembic (the ``sqlite:///mlflow.db`` store of ``conf/base/mlflow.yml``) stands
  in for ``mlflow`` (the same ``import mlflow``; kedro-mlflow's hooks and datasets work).

ColossalAI 0.5.0 travels as its 1.4 MB sdist (installed ``--no-deps``, as the Makefile does).
bitsandbytes (imported by ``colossalai.nn.optimizer`` through galore) is trimmed to the CUDA 13.0
kernels of the GPU image's torch: its wheel carries kernels for every CUDA and ROCm release.

The files go into ``part1/``, ``part2/``, ... of at most ``--part-mb`` (60 MB) each: a device
call carries at most 64 MiB of tree, and the whole set is about 80 MB (PyAV alone is 36 MB,
transformers 4.51.3 -- colossalai's pin, where the image has 5.x -- 10 MB), so a machine that
only receives files that way gets the parts in two calls (README, "Checking a GPU machine").
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import tomllib
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

logger = logging.getLogger("build_wheelhouse")

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parents[1]
DEFAULT_DEST = HERE / "wheelhouse"
DEFAULT_PRESENT = HERE / "gpu_image_packages.txt"
# One device call carries at most 64 MiB of tree: the wheelhouse goes in parts of this size.
PART_MB = 60.0
PYTHON_VERSION = "3.12"
# pip matches manylinux_2_N exactly: name every N a wheel of ours may carry.
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 26, 27, 28, 31, 34, 35, 39)] + [
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]
# The GPU machine's own torch and the packages only torch pulls in.
TORCH_STACK = {"torch", "triton"}
# Never used by the checks: user interfaces (MLflow's server and UI come with ``mlflow``).
LEFT_OUT = {"kedro-viz", "mlflow"}
# Installed in place of a left-out package: the same import, without the server and UI.
STAND_INS = {"mlflow": ["mlflow-skinny", "sqlalchemy", "alembic"]}
# Installed from their sdists (no wheel exists, or the Makefile installs it this way).
EXTRA_SDISTS = {"colossalai": "0.5.0"}
# Files of a wheel the GPU image never loads: kernels for other CUDA/ROCm/XPU releases.
# (The GPU image's torch is 2.11 + CUDA 13.0: bitsandbytes loads libbitsandbytes_cuda130.so.)
TRIM = {"bitsandbytes": re.compile(r"libbitsandbytes_(cuda(?!130)\d+|rocm\d+|xpu\d+)\.so$")}


@dataclass
class Item:
    """One distribution of the wheelhouse plan, and why it is (not) fetched."""

    name: str
    version: str
    action: str  # "fetch", "present", "torch", "left out"
    reason: str  # the requirement that brought it in
    installed_mb: float = 0.0  # size installed here: an upper bound of its wheel's size


def target_environment() -> dict[str, str]:
    """Marker values of the GPU machine's Python (3.12 on Linux x86_64)."""
    env = default_environment()
    env.update(python_version=PYTHON_VERSION, python_full_version=f"{PYTHON_VERSION}.3",
               sys_platform="linux", platform_system="Linux", platform_machine="x86_64",
               implementation_name="cpython", platform_python_implementation="CPython",
               os_name="posix")  # fmt: skip
    return env


def project_requirements(pyproject: Path) -> list[Requirement]:
    """The run-time dependencies of ``pyproject.toml`` (no extras such as dev)."""
    data = tomllib.loads(pyproject.read_text())
    return [Requirement(line) for line in data["project"]["dependencies"]]


def read_present(path: Path | None) -> dict[str, str | None]:
    """``{name: version or None}`` from a ``pip freeze``-style file (``name`` or ``name==v``)."""
    if path is None or not path.exists():
        return {}
    present: dict[str, str | None] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        present[canonicalize_name(name)] = version.strip() or None
    return present


def _installed_mb(dist: metadata.Distribution) -> float:
    size = sum(f.size or 0 for f in dist.files or [])
    return round(size / 1e6, 1)


def _accepts(specifiers: list[Requirement], version: str | None) -> bool:
    """Whether a present ``version`` satisfies every requirement on it (unknown: unless pinned)."""
    if version is None:
        return not any(str(s).startswith("==") for r in specifiers for s in r.specifier)
    try:
        parsed = Version(version)
    except InvalidVersion:
        return False
    return all(r.specifier.contains(parsed, prereleases=True) for r in specifiers)


def _requirements_of(dist: metadata.Distribution, extras: set[str], env: dict) -> list:
    found = []
    for line in dist.requires or []:
        requirement = Requirement(line)
        if requirement.marker is None:
            found.append(requirement)
            continue
        extra_envs = [{**env, "extra": extra} for extra in extras or {""}]
        if any(requirement.marker.evaluate(e) for e in extra_envs):
            found.append(requirement)
    return found


def plan(
    roots: list[Requirement], present: dict[str, str | None], find=metadata.distribution
) -> list[Item]:
    """Every distribution the roots need (through installed metadata), each with its action.

    ``find(name)`` returns the installed distribution of ``name`` (``importlib.metadata``'s
    by default; tests pass another environment's).
    """
    env = target_environment()
    wanted: dict[str, list[Requirement]] = {}
    reasons: dict[str, str] = {}
    extras: dict[str, set[str]] = {}
    queue = [(r, "pyproject.toml") for r in roots if r.marker is None or r.marker.evaluate(env)]
    queue += [(Requirement(stand_in), f"stands in for {name}")
              for name in sorted(STAND_INS) for stand_in in STAND_INS[name]]  # fmt: skip
    items: dict[str, Item] = {}
    while queue:
        requirement, reason = queue.pop(0)
        name = canonicalize_name(requirement.name)
        wanted.setdefault(name, []).append(requirement)
        new_extras = set(requirement.extras) - extras.get(name, set())
        if name in items and not new_extras:
            continue
        extras.setdefault(name, set()).update(requirement.extras)
        reasons.setdefault(name, reason)
        try:
            dist = find(requirement.name)
        except metadata.PackageNotFoundError:
            raise RuntimeError(
                f"{requirement.name} ({reason}) is not installed here: "
                "build the wheelhouse from the project's own venv"
            ) from None
        items[name] = Item(name, dist.version, "fetch", reasons[name], _installed_mb(dist))
        if name in TORCH_STACK or name in LEFT_OUT:
            continue  # not fetched, so nothing it needs is either
        for child in _requirements_of(dist, extras[name], env):
            queue.append((child, f"{name} needs {child}"))
    for name, item in items.items():
        if name in TORCH_STACK:
            item.action = "torch"
        elif name in LEFT_OUT:
            item.action = "left out"
        elif name in present and _accepts(wanted[name], present[name]):
            item.action = "present"
    return sorted(items.values(), key=lambda i: (i.action != "fetch", i.name))


def _pip(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def download(item: Item, dest: Path) -> Path:
    """Fetch one distribution, a wheel for the target when one exists, else its sdist."""
    spec = f"{item.name}=={item.version}"
    before = set(dest.iterdir())
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    wheel = _pip(["download", "-q", "--no-deps", "--only-binary=:all:", "--implementation",
                  "cp", "--python-version", PYTHON_VERSION, *platforms, "-d", str(dest),
                  spec])  # fmt: skip
    if wheel.returncode:
        sdist = _pip(["download", "-q", "--no-deps", "--no-binary=:all:", "-d", str(dest), spec])
        if sdist.returncode:
            raise RuntimeError(f"no wheel or sdist of {spec}:\n{wheel.stderr}\n{sdist.stderr}")
    new = sorted(set(dest.iterdir()) - before)
    if not new:  # already there from an earlier build
        prefix = re.sub(r"[-_.]+", "_", item.name).lower()
        new = [p for p in dest.iterdir() if re.sub(r"[-_.]+", "_", p.name).lower()
               .startswith(f"{prefix}_{item.version}")]  # fmt: skip
    return new[0]


def trim_wheel(path: Path, pattern: re.Pattern) -> Path:
    """Rewrite a wheel without the files ``pattern`` matches (their RECORD lines too)."""
    with zipfile.ZipFile(path) as source:
        names = [n for n in source.namelist() if not pattern.search(n)]
        if len(names) == len(source.namelist()):
            return path
        contents = {n: source.read(n) for n in names}
    record = next(n for n in names if n.endswith(".dist-info/RECORD"))
    lines = [line for line in contents[record].decode().splitlines()
             if not pattern.search(line.split(",", 1)[0])]  # fmt: skip
    contents[record] = ("\n".join(lines) + "\n").encode()
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".whl") as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as target:
            for name, data in contents.items():
                target.writestr(name, data)
    Path(tmp.name).replace(path)
    return path


def build(items: list[Item], dest: Path) -> list[Path]:
    """Fetch every ``fetch`` item and the extra sdists into ``dest``; trim what TRIM names."""
    dest.mkdir(parents=True, exist_ok=True)
    files = []
    for item in [i for i in items if i.action == "fetch"]:
        path = download(item, dest)
        if item.name in TRIM and path.suffix == ".whl":
            path = trim_wheel(path, TRIM[item.name])
        files.append(path)
        logger.info("  %-40s %6.1f MB", path.name, path.stat().st_size / 1e6)
    for name, version in EXTRA_SDISTS.items():
        path = download(Item(name, version, "fetch", "sdist"), dest)
        files.append(path)
        logger.info("  %-40s %6.1f MB", path.name, path.stat().st_size / 1e6)
    return files


def split_parts(sizes: dict[str, int], part_bytes: int) -> list[list[str]]:
    """File names grouped into parts of at most ``part_bytes`` each (largest first, each into
    the first part with room); a file larger than a part is an error."""
    parts: list[list[str]] = []
    room: list[int] = []
    for name in sorted(sizes, key=lambda n: (-sizes[n], n)):
        if sizes[name] > part_bytes:
            raise ValueError(f"{name} ({sizes[name] / 1e6:.1f} MB) is larger than a part")
        index = next((i for i, free in enumerate(room) if free >= sizes[name]), None)
        if index is None:
            parts.append([])
            room.append(part_bytes)
            index = len(parts) - 1
        parts[index].append(name)
        room[index] -= sizes[name]
    return parts


def move_into_parts(files: list[Path], dest: Path, part_bytes: int) -> list[Path]:
    """Move the fetched files into ``dest/part1``, ``dest/part2``, ...; returns the folders."""
    by_name = {p.name: p for p in files}
    folders = []
    for number, names in enumerate(split_parts(
        {n: p.stat().st_size for n, p in by_name.items()}, part_bytes), start=1
    ):  # fmt: skip
        folder = dest / f"part{number}"
        folder.mkdir()
        for name in names:
            by_name[name].rename(folder / name)
        folders.append(folder)
    return folders


def clear(dest: Path) -> None:
    """Empty a wheelhouse folder made by this script (wheels, sdists, part folders only)."""
    if not dest.exists():
        return
    for path in dest.iterdir():
        if path.is_dir() and path.name.startswith("part"):
            shutil.rmtree(path)
        elif path.suffix == ".whl" or path.name.endswith(".tar.gz"):
            path.unlink()
        else:
            raise RuntimeError(f"{dest} holds {path.name}, which this script did not make")


def sdist_plan() -> list[Item]:
    """The sdists installed ``--no-deps`` beside the wheels."""
    return [Item(n, v, "fetch", "installed --no-deps (as the Makefile does)")
            for n, v in EXTRA_SDISTS.items()]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    parser.add_argument(
        "--present",
        type=Path,
        default=DEFAULT_PRESENT,
        help="pip freeze of the GPU machine (name or name==version per line)",
    )
    parser.add_argument(
        "--part-mb",
        type=float,
        default=PART_MB,
        help="largest part (one device call's share of the 64 MiB tree)",
    )
    parser.add_argument("--dry-run", action="store_true", help="list what would be fetched")
    parser.add_argument("--json", type=Path, default=None, help="write the plan as JSON")
    args = parser.parse_args(argv)  # fmt: skip
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    items = plan(project_requirements(PROJECT_ROOT / "pyproject.toml"), read_present(args.present))
    items += sdist_plan()
    for item in items:
        logger.info("%-9s %-28s %-12s %7.1f MB  %s", item.action, item.name, item.version,
                    item.installed_mb, item.reason)  # fmt: skip
    fetch = [i for i in items if i.action == "fetch"]
    upper = sum(i.installed_mb for i in fetch)
    if args.json:
        args.json.write_text(json.dumps([asdict(i) for i in items], indent=1))
    if args.dry_run:
        logger.info("would fetch %d distributions into %s; installed here they take %.0f MB "
                    "(an upper bound: wheels are compressed); parts of at most %.0f MB",
                    len(fetch), args.dest, upper, args.part_mb)  # fmt: skip
        return 0
    clear(args.dest)
    files = build([i for i in items if i.name not in EXTRA_SDISTS], args.dest)
    total = sum(p.stat().st_size for p in files) / 1e6
    folders = move_into_parts(files, args.dest, int(args.part_mb * 1e6))
    for folder in folders:
        size = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
        logger.info("%s: %d files, %.1f MB", folder, len(list(folder.iterdir())), size)
    logger.info("wheelhouse %s: %d files, %.1f MB in %d part(s) of at most %.0f MB",
                args.dest, len(files), total, len(folders), args.part_mb)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
