"""Packaging: building the package without the native library fails at install time with a
message saying what to run (never "installs, then import fails"); a built wheel is tagged for
the platform and carries the licence texts; the metadata names the licence and the extras."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import bitsec

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

PKG = Path(__file__).resolve().parents[1]


def fresh_copy(tmp_path: Path) -> Path:
    """bindings/python as a fresh clone has it: no library in src/bitsec/_lib."""
    dst = tmp_path / "python"
    shutil.copytree(PKG, dst, symlinks=False,
                    ignore=shutil.ignore_patterns("_lib", "build", "*.egg-info", ".mypy_cache", "__pycache__", "tests",
                                                  "_speedups*.so"))
    assert not (dst / "src" / "bitsec" / "_lib").exists()
    return dst


def build_wheel(src: Path, out: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    full = {k: v for k, v in os.environ.items() if k not in ("BITSEC_LIBRARY", "BITSEC_BUNDLE_LIBRARY")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--disable-pip-version-check", "-w", str(out), str(src)],
                          capture_output=True, text=True, env=full, timeout=300)


def test_install_without_the_library_fails_and_says_what_to_run(tmp_path: Path) -> None:
    r = build_wheel(fresh_copy(tmp_path), tmp_path / "out")
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "libbitsec.so.1 is not in bindings/python/src/bitsec/_lib/" in out
    assert "make build" in out
    assert not list((tmp_path / "out").glob("*.whl")) if (tmp_path / "out").exists() else True


def test_wheel_with_the_library_is_a_platform_wheel_with_licences(tmp_path: Path) -> None:
    r = build_wheel(fresh_copy(tmp_path), tmp_path / "out", {"BITSEC_BUNDLE_LIBRARY": bitsec.library_path()})
    assert r.returncode == 0, r.stdout + r.stderr
    (whl,) = (tmp_path / "out").glob("*.whl")
    # one wheel for CPython 3.10 and later: the guard's compiled steps use the limited API only
    assert whl.name == f"bitsec-{bitsec.__version__}-cp310-abi3-linux_x86_64.whl"
    names = zipfile.ZipFile(whl).namelist()
    assert "bitsec/_lib/libbitsec.so.1" in names  # platlib, where auditwheel expects it
    assert "bitsec/_speedups.abi3.so" in names and "bitsec/_speedups.pyi" in names
    assert "bitsec/cli.py" in names
    lic = f"bitsec-{bitsec.__version__}.dist-info/licenses/"
    for f in ("LICENSE", "licenses/hiredis-COPYING", "licenses/swift-runtime-LICENSE.txt", "licenses/NOTICE"):
        assert lic + f in names, names
    text = zipfile.ZipFile(whl).read(lic + "LICENSE").decode()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    swift = zipfile.ZipFile(whl).read(lic + "licenses/swift-runtime-LICENSE.txt").decode()
    assert "Runtime Library Exception" in swift
    meta = zipfile.ZipFile(whl).read(f"bitsec-{bitsec.__version__}.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in meta
    for extra in ("fastapi", "sqlalchemy", "qr", "prometheus"):
        assert f"Provides-Extra: {extra}" in meta


def test_pyproject_licence_and_extras(repo_root: Path) -> None:
    doc = tomllib.loads((PKG / "pyproject.toml").read_text())
    project = doc["project"]
    assert project["license"] == "Apache-2.0"
    assert set(project["optional-dependencies"]) == {"fastapi", "sqlalchemy", "qr", "prometheus"}
    assert project["scripts"]["bitsec"] == "bitsec.__main__:main"
    assert (repo_root / "LICENSE").read_text() == (PKG / "LICENSE").read_text()
    assert "Apache License" in (repo_root / "LICENSE").read_text()
    changelog = (repo_root / "CHANGELOG.md").read_text()
    assert changelog.startswith("# Changelog") and "## [Unreleased]" in changelog


def test_a_build_without_a_c_compiler_installs_without_the_compiled_steps(tmp_path: Path) -> None:
    # bitsec._speedups is optional: without a working C compiler the wheel is built without
    # it (setuptools' optional extension), and the package does the same steps in Python.
    r = build_wheel(fresh_copy(tmp_path), tmp_path / "out",
                    {"BITSEC_BUNDLE_LIBRARY": bitsec.library_path(), "CC": "/bin/false"})
    assert r.returncode == 0, r.stdout + r.stderr
    (whl,) = (tmp_path / "out").glob("*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert "bitsec/_lib/libbitsec.so.1" in names and not [n for n in names if "_speedups" in n and n.endswith(".so")]
