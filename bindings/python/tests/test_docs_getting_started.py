"""The getting-started pages' code runs as printed: the C program is extracted from
docs/getting-started-c.md, compiled against include/ and the library under test, run, and its
output compared with the page's; the FastAPI service and its "try it" script are extracted
from docs/getting-started-fastapi.md and run in a fresh directory."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DOCS = ROOT / "docs"


def _library() -> Path:
    lib = os.environ.get("BITSEC_LIBRARY")
    assert lib, "BITSEC_LIBRARY must name the library under test"
    return Path(lib).resolve()


def _blocks(page: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", (DOCS / page).read_text(), re.S | re.M)


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["BITSEC_TOKEN_SECRET"] = os.urandom(32).hex()
    env["AUDIT_LOG"] = str(tmp_path / "audit.log")
    return env


def test_c_program_compiles_runs_and_prints_what_the_page_says(tmp_path: Path) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed"
    (program,) = _blocks("getting-started-c.md", "c")
    src = tmp_path / "quickstart.c"
    src.write_text(program)
    lib = _library()
    # Link the exact file under test (its SONAME is libbitsec.so.1).
    subprocess.run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-I", str(ROOT / "include"), str(src),
                    str(lib), "-o", str(tmp_path / "quickstart")], check=True)
    env = _env(tmp_path)
    env["LD_LIBRARY_PATH"] = str(lib.parent)
    out = subprocess.run([str(tmp_path / "quickstart")], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    (expected,) = _blocks("getting-started-c.md", "text")
    want = [re.escape(line).replace(r"\.\.\.", r"\d+") for line in expected.strip().splitlines()]
    got = out.stdout.strip().splitlines()
    assert len(got) == len(want), out.stdout
    for g, w in zip(got, want):
        assert re.fullmatch(w, g), (g, w)


def test_c_program_reports_a_missing_secret_instead_of_running(tmp_path: Path) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc
    (program,) = _blocks("getting-started-c.md", "c")
    (tmp_path / "q.c").write_text(program)
    lib = _library()
    subprocess.run([cc, "-std=c11", "-I", str(ROOT / "include"), str(tmp_path / "q.c"), str(lib),
                    "-o", str(tmp_path / "q")], check=True)
    env = _env(tmp_path)
    del env["BITSEC_TOKEN_SECRET"]
    env["LD_LIBRARY_PATH"] = str(lib.parent)
    out = subprocess.run([str(tmp_path / "q")], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.startswith("open: ") and "BITSEC_TOKEN_SECRET" in out.stderr


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fastapi_service_and_try_it_script_run(tmp_path: Path) -> None:
    blocks = _blocks("getting-started-fastapi.md", "python")
    app = next(b for b in blocks if b.startswith("# app.py"))
    try_it = next(b for b in blocks if b.startswith("# try_it.py"))
    (tmp_path / "app.py").write_text(app)
    (tmp_path / "try_it.py").write_text(try_it)
    env = _env(tmp_path)
    env["PYTHONPATH"] = str(ROOT / "bindings" / "python" / "src")
    out = subprocess.run([sys.executable, "try_it.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"ok: \d+ requests left\n", out.stdout), out.stdout
    # The audit middleware wrote the requests into the configured trail.
    assert (tmp_path / "audit.log").read_text().count('"type":"authorization"') >= 1
