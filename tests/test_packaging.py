"""One import name: tradeoff installs as ``tradeoff.*`` and leaves ``search``, ``spaces`` and
``storage`` to whatever else is installed (Hugging Face's ``spaces``, PyPI's ``storage``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_has_no_generic_top_level_package(tmp_path):
    # built from a copy of the sources: a build/ folder left by an earlier build would hide a
    # module the package list misses
    src = tmp_path / "src"
    for name in ("search", "spaces", "storage"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(src),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("tradeoff-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"tradeoff", next(t for t in tops if t.endswith(".dist-info"))}
    for package in ("search", "spaces", "storage"):
        assert f"tradeoff/{package}/__init__.py" in names
    # every module of the source tree, sub-packages included (a non-editable install, as the
    # Docker image makes, has only what the wheel holds)
    modules = {
        f"tradeoff/{p.relative_to(ROOT).as_posix()}"
        for folder in ("search", "spaces", "storage")
        for p in (ROOT / folder).rglob("*.py")
    }
    assert modules - set(names) == set()
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "tradeoff = tradeoff.search.cli:main" in entry


def test_other_packages_named_spaces_storage_and_search_live_beside_it(tmp_path):
    others = tmp_path / "others"
    for name in ("spaces", "storage", "search"):
        (others / name).mkdir(parents=True)
        (others / name / "__init__.py").write_text(f"WHO = 'the other {name}'\n")
    code = (
        "import spaces, storage, search\n"
        "import tradeoff.spaces, tradeoff.storage, tradeoff.search.cli\n"
        "assert spaces.WHO == 'the other spaces' and storage.WHO == 'the other storage'\n"
        "assert search.WHO == 'the other search'\n"
        "assert 'prune_ratio' in tradeoff.spaces.KNOBS and hasattr(tradeoff.storage, 'open_storage')\n"
        "import sys; assert not any(m.startswith(('spaces.', 'storage.', 'search.')) for m in sys.modules)\n"
        "print('ok')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(others))
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_every_import_is_absolute_under_tradeoff():
    bad = []
    for folder in ("search", "spaces", "storage", "benchmarks", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                stripped = line.strip()
                if stripped.startswith(("from search", "from spaces", "from storage", "import search")) or (
                    stripped.startswith(("import spaces", "import storage", "from ."))
                ):
                    bad.append(f"{path.relative_to(ROOT)}:{number}: {stripped}")
                if "sys.path.insert" in stripped and folder == "benchmarks":
                    bad.append(f"{path.relative_to(ROOT)}:{number}: {stripped}")
    assert not bad, "\n".join(bad)


def test_no_module_imports_another_modules_private_name():
    """Names used across modules are public: ``from tradeoff.x import _y`` is a hidden contract."""
    import ast

    bad = []
    for folder in ("search", "spaces", "storage", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tradeoff"):
                    bad += [
                        f"{path.relative_to(ROOT)}: from {node.module} import {a.name}"
                        for a in node.names
                        if a.name.startswith("_")
                    ]
    assert not bad, "\n".join(bad)
