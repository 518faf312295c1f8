"""tools/gen_abi.py: the generated constants and prototypes follow their sources, and
`make check-generated` notices a stale or hand-edited generated file."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest


def load_gen(repo_root: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_abi", repo_root / "tools" / "gen_abi.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gen_abi"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_committed_outputs_match_their_sources(repo_root: Path) -> None:
    r = subprocess.run([sys.executable, "tools/gen_abi.py", "--check"], cwd=repo_root, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_changed_source_changes_both_outputs(repo_root: Path, tmp_path: Path) -> None:
    gen = load_gen(repo_root)
    src = (repo_root / "Sources/Bitsec/ABIConstants.swift").read_text()
    changed = tmp_path / "ABIConstants.swift"
    changed.write_text(src.replace("BITSEC_TOKEN_MAX_JTI_BYTES: Int32 = 512", "BITSEC_TOKEN_MAX_JTI_BYTES: Int32 = 1024"))
    fams = [gen.version_family(gen.parse_version()), *gen.parse_constants(changed)]
    header = gen.render_umbrella((repo_root / "include/bitsec.h").read_text(), fams)
    assert "#define BITSEC_TOKEN_MAX_JTI_BYTES 1024" in header
    assert "BITSEC_TOKEN_MAX_JTI_BYTES: Final = 1024" in gen.render_python(fams, gen.parse_prototypes())
    # The hand-written parts of the header are kept as they are.
    assert "typedef struct bitsec_runtime bitsec_runtime;" in header and "#define BITSEC_PERM_ALLOWED(d)" in header


@pytest.mark.parametrize("line, message", [
    ("    public static let BITSEC_OK: Int32 = 1", "declared twice"),
    ("    public static let BITSEC_X: Double = 1", "type Double"),
    ("    public static let BITSEC_X: Int32 = 1 << 40", "does not fit"),
    ("    public static let BITSEC_X: Int32 = foo()", "unsupported value"),
    ("    static let BITSEC_X: Int32 = 1", "not in the constants format"),
])
def test_the_source_format_is_strict(repo_root: Path, tmp_path: Path, line: str, message: str) -> None:
    gen = load_gen(repo_root)
    src = (repo_root / "Sources/Bitsec/ABIConstants.swift").read_text()
    bad = tmp_path / "ABIConstants.swift"
    bad.write_text(src.replace("    public static let BITSEC_TOKEN_VALID:", line + "\n    public static let BITSEC_TOKEN_VALID:", 1))
    with pytest.raises(gen.GenError, match=message):
        gen.parse_constants(bad)


def test_check_fails_on_a_hand_edited_output(repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    gen = load_gen(repo_root)
    edited = tmp_path / "_abi.py"
    text = (repo_root / "bindings/python/src/bitsec/_abi.py").read_text()
    edited.write_text(text.replace("BITSEC_E_CLOSED: Final = 7", "BITSEC_E_CLOSED: Final = 70"))
    monkeypatch.setattr(gen, "PY_ABI", edited)
    monkeypatch.setattr(gen, "ROOT", tmp_path.parent)
    assert gen.main(["gen_abi.py", "--check"]) == 1
    assert "BITSEC_E_CLOSED: Final = 70" in edited.read_text()  # --check writes nothing
    assert "stale" in capsys.readouterr().err
