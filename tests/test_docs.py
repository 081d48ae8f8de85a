"""The documentation builds, and its code samples run against a real broker.

Every block fenced as ```python in docs/*.md is run: the blocks of one page
in order, in one interpreter, with 127.0.0.1:9092 replaced by the session
broker's address. A fragment that cannot run on its own is fenced as ```py
and is only shown. Other Python-like info strings are refused, so that a
sample cannot slip out of the check by a typo.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from nccoord.topics import ensure_topics

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SAMPLE_ADDRESS = "127.0.0.1:9092"
RUN, SHOW = "python", "py"
# Pages named in mkdocs.yml's nav that are still being written.
PENDING = {"benchmarks.md"}

FENCE = re.compile(r"^```([^\s`]*)[^\n]*\n(.*?)^```\s*$", re.DOTALL | re.MULTILINE)


def blocks(page: Path) -> list[tuple[str, str]]:
    """(info string, code) of each fenced block of a page."""
    return [(m[1], m[2]) for m in FENCE.finditer(page.read_text())]


def pages_with_samples() -> list[Path]:
    return [p for p in sorted(DOCS.glob("*.md")) if any(i == RUN for i, _ in blocks(p))]


def test_docs_build_strict(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "getting-started" / "index.html").is_file()


def test_every_nav_page_exists_but_the_pending_ones() -> None:
    nav = re.findall(r":\s*([\w./-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)
    assert "getting-started.md" in nav
    missing = {page for page in nav if not (DOCS / page).is_file()}
    assert missing <= PENDING, f"nav names missing pages {missing - PENDING}"
    unlisted = {p.name for p in DOCS.glob("*.md")} - set(nav)
    assert not unlisted, f"pages not in the nav: {unlisted}"


def test_python_blocks_are_marked_run_or_show() -> None:
    odd = [
        f"{page.name}: ```{info}"
        for page in sorted(DOCS.glob("*.md"))
        for info, _ in blocks(page)
        if info.lower().startswith(("py", "python")) and info not in (RUN, SHOW)
    ]
    assert not odd, "fence Python samples as ```python (run) or ```py (shown): " + str(
        odd
    )


def test_there_are_samples_to_run() -> None:
    names = {page.name for page in pages_with_samples()}
    assert {"getting-started.md", "election.md", "monitoring.md"} <= names


@pytest.mark.broker
@pytest.mark.parametrize("page", pages_with_samples(), ids=lambda p: p.name)
def test_samples_run(page: Path, kafka_bootstrap: str, tmp_path: Path) -> None:
    # The pages assume what getting-started.md does first, once per cluster:
    # the system topics exist. Each page is run on its own, in any order.
    ensure_topics(AdminClient({"bootstrap.servers": kafka_bootstrap}))
    script = _script(page, kafka_bootstrap)
    path = tmp_path / f"{page.stem}.py"
    path.write_text(script)
    done = subprocess.run(
        [sys.executable, str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, (
        f"a sample of {page.name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    )
    assert done.stdout.count("--- sample") == _count(page)


def _count(page: Path) -> int:
    return sum(1 for info, _ in blocks(page) if info == RUN)


def _script(page: Path, bootstrap: str) -> str:
    """One script that runs the page's samples in order, in one namespace."""
    parts = ["import sys", "namespace = {'__name__': '__main__'}"]
    for index, (info, code) in enumerate(blocks(page)):
        if info != RUN:
            continue
        code = code.replace(SAMPLE_ADDRESS, bootstrap)
        label = f"{page.name} sample {index + 1}"
        parts.append(f"print('--- sample', {label!r}, flush=True)")
        parts.append(f"exec(compile({code!r}, {label!r}, 'exec'), namespace)")
    return "\n".join(parts) + "\n"
