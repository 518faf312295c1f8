#!/usr/bin/env python3
"""Renders the markdown guides of docs/ (and the README) to HTML under OUT/guides and writes
OUT/index.html, the manual's front page linking the guides, the Python API reference
(OUT/python, rendered by pdoc) and the C API reference (OUT/c/html, rendered by Doxygen).

    tools/build_docs.py OUT

Links between guides (`stores.md`, `../BENCHMARKS.md#x`) are rewritten to the rendered
pages. Uses markdown2, which pdoc depends on. Fails on a guide that links to a markdown file
that does not exist, so a renamed page cannot leave a dead link behind.
"""
from __future__ import annotations

import html
import re
import sys
from pathlib import Path

import markdown2

ROOT = Path(__file__).resolve().parents[1]

# The front page, in reading order: (file under the repository, title). Other pages of docs/
# are listed after these, under "More".
GUIDES = [
    ("docs/getting-started-fastapi.md", "Getting started: a FastAPI service"),
    ("docs/getting-started-c.md", "Getting started: a C program"),
    ("docs/getting-started-operator.md", "Getting started: operating bitsec"),
    ("docs/deployment.md", "Deployment guide"),
    ("docs/security-model.md", "Security model"),
    ("docs/configuration.md", "Configuration reference"),
    ("docs/fastapi.md", "FastAPI integration"),
    ("docs/cli.md", "The bitsec command"),
]

STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
pre { background: #f5f5f5; padding: .75rem; overflow-x: auto; } code { font-size: 90%; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: .25rem .5rem; vertical-align: top; }
nav { margin-bottom: 1.5rem; font-size: 90%; } a { color: #0b5cad; }
"""


def page(title: str, body: str, up: str) -> str:
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><nav><a href=\"{up}index.html\">bitsec manual</a></nav>\n"
            f"{body}\n</body></html>\n")


def out_name(rel: str) -> str:
    """guides/<name>.html for docs/<name>.md; guides/root-<name>.html for a root file."""
    p = Path(rel)
    stem = p.stem if p.parts[0] == "docs" else f"root-{p.stem}"
    return f"guides/{stem}.html"


def rewrite_links(text: str, src: Path, known: dict[Path, str], problems: list[str]) -> str:
    def fix(m: re.Match[str]) -> str:
        label, target = m.group(1), m.group(2)
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            return m.group(0)
        path, _, frag = target.partition("#")
        resolved = (src.parent / path).resolve()
        if path.endswith(".md"):
            if resolved not in known:
                if not resolved.exists():
                    problems.append(f"{src.relative_to(ROOT)}: link to missing {path}")
                    return m.group(0)
                known[resolved] = out_name(str(resolved.relative_to(ROOT)))
            dest = Path(known[resolved]).name
            return f"[{label}]({dest}{'#' + frag if frag else ''})"
        # A source file or directory of the repository: point at it in the tree (relative to
        # the output), as text, since the manual does not copy sources.
        return f"{label} (`{resolved.relative_to(ROOT) if resolved.is_relative_to(ROOT) else path}`)"

    return re.sub(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)", fix, text)


def main() -> int:
    out = Path(sys.argv[1]).resolve()
    (out / "guides").mkdir(parents=True, exist_ok=True)
    sources = [ROOT / g for g, _ in GUIDES if (ROOT / g).exists()]
    sources += sorted(p for p in (ROOT / "docs").glob("*.md") if p not in sources and p.name != "c-api-mainpage.md")
    sources += [ROOT / "README.md", ROOT / "BENCHMARKS.md"]
    known = {p.resolve(): out_name(str(p.relative_to(ROOT))) for p in sources}
    problems: list[str] = []
    titles: dict[Path, str] = {}
    i = 0
    while i < len(sources):  # grows when a guide links to another markdown file of the tree
        src = sources[i]
        i += 1
        text = src.read_text(encoding="utf-8")
        first = re.search(r"^# (.+)$", text, re.M)
        titles[src] = first.group(1) if first else src.stem
        before = set(known)
        text = rewrite_links(text, src, known, problems)
        for new in set(known) - before:
            sources.append(new)
        body = markdown2.markdown(text, extras=["fenced-code-blocks", "tables", "header-ids", "code-friendly"])
        (out / known[src.resolve()]).write_text(page(titles[src], body, "../"), encoding="utf-8")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    listed = {ROOT / g for g, _ in GUIDES}
    items = [f'<li><a href="{known[(ROOT / g).resolve()]}">{html.escape(t)}</a></li>'
             for g, t in GUIDES if (ROOT / g).exists()]
    more = [f'<li><a href="{known[s.resolve()]}">{html.escape(titles[s])}</a></li>'
            for s in sources if s not in listed]
    body = f"""<h1>bitsec manual</h1>
<p>bitsec is an embeddable security runtime: token verification and signing, permission
checks, rate limits and login protection, TOTP, field encryption and a tamper-evident audit
trail, in one native library with a C API and a Python binding.</p>
<h2>Guides</h2><ul>{''.join(items)}</ul>
<h2>API reference</h2><ul>
<li><a href="python/bitsec.html">Python API</a> (the <code>bitsec</code> package)</li>
<li><a href="c/html/index.html">C API</a> (<code>bitsec.h</code>, <code>bitsec_api.h</code>)</li>
</ul>
<h2>More</h2><ul>{''.join(more)}</ul>"""
    (out / "index.html").write_text(page("bitsec manual", body, ""), encoding="utf-8")
    print(f"manual: {out / 'index.html'} ({len(sources)} guides)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
