"""Build hooks of the bitsec wheel (the metadata is in pyproject.toml).

The package wraps libbitsec.so.1, a native library built from the repository's Swift
sources (`make build`, which copies it into src/bitsec/_lib/). This file:

- refuses to build a wheel without that library, with a message saying what to run, so
  that `pip install ./bindings/python` never installs a package whose import then fails
  (an editable install, `pip install -e`, is allowed: it loads the library from the source
  tree once `make build` has put it there, or from BITSEC_LIBRARY);
- takes the library from BITSEC_BUNDLE_LIBRARY=/path/libbitsec.so.1 when that is set (an
  sdist built elsewhere);
- builds bitsec._speedups, the guard's optional compiled steps (src/bitsec/_speedups.c),
  against CPython's limited API, so one file serves Python 3.10 and later; optional: without
  a C compiler or Python.h the package installs without it and does the same in Python;
- tags the wheel for the platform (cp310-abi3-linux_x86_64: native code, and one extension
  built for the limited API), which `auditwheel repair` turns into a manylinux tag
  (`make dist`).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from setuptools import Distribution, Extension, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
BUNDLED = HERE / "src" / "bitsec" / "_lib" / "libbitsec.so.1"

MISSING = """
bitsec: libbitsec.so.1 is not in bindings/python/src/bitsec/_lib/.

This package wraps the native bitsec library, which is built from the repository's Swift
sources. In a checkout of the repository run

    make build            (needs Swift 6.3, libssl-dev and libhiredis-dev)

then install again; or install a platform wheel (`make dist` writes one to dist/); or set
BITSEC_BUNDLE_LIBRARY=/path/to/libbitsec.so.1 to bundle a library built elsewhere.
"""


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "bitsec" / "_lib" / "libbitsec.so.1"
        src = os.environ.get("BITSEC_BUNDLE_LIBRARY")
        if src:
            if not os.path.isfile(src):
                raise SystemExit(f"bitsec: BITSEC_BUNDLE_LIBRARY={src} is not a file")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
            os.chmod(target, 0o755)
        if not target.exists():
            raise SystemExit(MISSING)


class BinaryDistribution(Distribution):
    """Holds native code: installed into platlib, in a platform wheel."""

    def has_ext_modules(self) -> bool:
        return True


class PlatformWheel(bdist_wheel):
    def get_tag(self) -> tuple[str, str, str]:
        _, _, plat = super().get_tag()
        return "cp310", "abi3", plat


SPEEDUPS = Extension(
    "bitsec._speedups", sources=["src/bitsec/_speedups.c"], py_limited_api=True, optional=True,
    define_macros=[("Py_LIMITED_API", "0x030A0000")], extra_compile_args=["-std=c11", "-O2", "-Wall"])

setup(distclass=BinaryDistribution, ext_modules=[SPEEDUPS],
      cmdclass={"build_py": BuildPy, "bdist_wheel": PlatformWheel})
