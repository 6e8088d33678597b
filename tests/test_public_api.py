"""Users' code, the docs and the benchmarks reach eigjax through its public names only.

Issue #14: everything a reader or a benchmark needs has a public way (``eigjax.*``,
``eigjax.app.*``, and ``eigjax.internal.*`` for the unstable internals), so no code in the
README, the docs, BENCHMARKS.md, ``benchmarks/`` or ``scripts/`` names a private module
or attribute (``eigjax._eigh``, ``eigjax.app._runner``, ``from eigjax import _x``).
Checked: every fenced code block of the Markdown files, and the whole of each ``.py``
file (docstrings and comments included). Prose may still name source files by path
(``eigjax/_eigh.py``): that is a pointer for readers, not an import.
"""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

MARKDOWN = [
    ROOT / "README.md",
    ROOT / "BENCHMARKS.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "benchmarks").glob("*.md")),
]
PYTHON = [*sorted((ROOT / "benchmarks").glob("*.py")), *sorted((ROOT / "scripts").glob("*.py"))]

FENCE = re.compile(r"^(```|~~~)[^\n]*\n(.*?)^\1[ \t]*$", re.S | re.M)
PRIVATE = [
    re.compile(r"\beigjax(?:\.[A-Za-z]\w*)*\._\w"),  # eigjax._eigh, eigjax.app._runner.x
    re.compile(r"\bfrom\s+eigjax(?:\.\w+)*\s+import\s+\(?[^\n]*?(?<![\w.])_[A-Za-z]\w*"),  # from eigjax import _x
    re.compile(r"\bfrom\s+\.+_\w"),  # a relative import of a private module
]


def private_uses(text: str) -> list[str]:
    hits = []
    for number, line in enumerate(text.splitlines(), 1):
        if any(p.search(line) for p in PRIVATE):
            hits.append(f"{number}: {line.strip()}")
    return hits


def test_the_patterns_catch_what_they_should():
    bad = [
        "from eigjax._diagnostics import run_check",
        "import eigjax._small",
        "eigjax._small.eigh_small(a)",
        "from eigjax.app._runner import make_optimizer",
        "from eigjax import eigh, _native",
        "x = eigjax.app._batch.run",
    ]
    good = [
        "from eigjax.app import run_check",
        "import eigjax.internal",
        "eigjax.eigh(a)",
        "from eigjax.app import run_batch_eval",
        "see eigjax/_eigh.py",
        "eigjax.internal.eigh_small(a)",
    ]
    assert all(private_uses(s) for s in bad)
    assert not any(private_uses(s) for s in good)


@pytest.mark.parametrize("path", [p for p in MARKDOWN if p.exists()], ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_code_blocks_use_public_names(path):
    hits = [h for block in FENCE.finditer(path.read_text()) for h in private_uses(block.group(2))]
    assert not hits, f"{path.name}: private eigjax names in code blocks (use eigjax.internal):\n" + "\n".join(hits)


@pytest.mark.parametrize("path", PYTHON, ids=lambda p: str(p.relative_to(ROOT)))
def test_benchmarks_and_scripts_use_public_names(path):
    hits = private_uses(path.read_text())
    assert not hits, f"{path.name}: private eigjax names (use eigjax.internal):\n" + "\n".join(hits)
