"""The loader's search order, its ImportError, and the ABI check (each in a fresh process)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import bitsec


def run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "BITSEC_LIBRARY"}
    full.update(env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full, capture_output=True, text=True, timeout=60)


def test_bitsec_library_env_is_used_first() -> None:
    path = bitsec.library_path()
    r = run("import bitsec; print(bitsec.library_path())", {"BITSEC_LIBRARY": path})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == path


def test_an_unloadable_bitsec_library_is_an_error_that_says_why(tmp_path: Path) -> None:
    # A path that does not exist: no silent fallback to the bundled copy.
    r = run("import bitsec", {"BITSEC_LIBRARY": "/nonexistent/libbitsec.so"})
    assert r.returncode != 0
    assert "ImportError" in r.stderr
    assert "BITSEC_LIBRARY=/nonexistent/libbitsec.so" in r.stderr
    assert "No such file" in r.stderr or "cannot open" in r.stderr
    assert "(bundled)" not in r.stderr  # no other copy was tried
    # A file that is not a shared library: the loader's own reason is shown.
    bogus = tmp_path / "libbitsec.so.1"
    bogus.write_text("not an ELF file\n")
    r = run("import bitsec", {"BITSEC_LIBRARY": str(bogus)})
    assert r.returncode != 0
    assert f"BITSEC_LIBRARY={bogus}" in r.stderr
    assert "invalid ELF header" in r.stderr or "file too short" in r.stderr
    # Another library's ABI behind BITSEC_LIBRARY is refused too, with its version.
    src = tmp_path / "fake.c"
    src.write_text("int bitsec_abi_version(void) { return 2; }\n")
    so = tmp_path / "libfake.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(so), str(src)], check=True)
    r = run("import bitsec", {"BITSEC_LIBRARY": str(so)})
    assert r.returncode != 0
    assert "ABI version 2, this package needs 1" in r.stderr


def test_without_bitsec_library_the_bundled_copy_is_used() -> None:
    r = run("import bitsec; print(bitsec.library_path())", {})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith(os.path.join("bitsec", "_lib", "libbitsec.so.1"))


def test_import_error_lists_what_was_tried(tmp_path: Path) -> None:
    code = """
        from bitsec import _native
        """
    # Load with explicit candidates that all fail, through the module's own function.
    code = """
        import ctypes, bitsec._native as n
        try:
            n.load_library([("BITSEC_LIBRARY", "/nonexistent/a.so"), ("bundled", "/nonexistent/b.so"), ("system", "libnothing-bitsec.so.9")])
        except ImportError as e:
            print(e)
        """
    r = run(code, {})
    assert r.returncode == 0, r.stderr
    assert "/nonexistent/a.so (BITSEC_LIBRARY)" in r.stdout
    assert "/nonexistent/b.so (bundled): not present" in r.stdout
    assert "libnothing-bitsec.so.9 (system)" in r.stdout
    assert "BITSEC_LIBRARY" in r.stdout


def test_refuses_another_abi_version(tmp_path: Path) -> None:
    src = tmp_path / "fake.c"
    src.write_text("int bitsec_abi_version(void) { return 2; }\n")
    so = tmp_path / "libfake.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(so), str(src)], check=True)
    code = f"""
        import bitsec._native as n
        try:
            n.load_library([("BITSEC_LIBRARY", {str(so)!r})])
        except ImportError as e:
            print(e)
        """
    r = run(code, {})
    assert r.returncode == 0, r.stderr
    assert "ABI version 2, this package needs 1" in r.stdout


def test_not_a_bitsec_library(tmp_path: Path) -> None:
    code = """
        import bitsec._native as n
        try:
            n.load_library([("system", "libc.so.6")])
        except ImportError as e:
            print(e)
        """
    r = run(code, {})
    assert "not a bitsec library" in r.stdout
