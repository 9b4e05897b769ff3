"""The README and docs quote figures only from results/.

A paragraph of prose that names a results file, and a table that names one or
follows a paragraph that does, cite that file. Every decimal figure in them
(a score, a time, a percentage) must be in a cited file, at the precision
quoted: 0.722 is found as 0.7224, 13.4% as 13.4%. A stale or invented figure
fails here; so does a figure whose file was regenerated without the docs.
Whole numbers (steps, cores, seeds, years) are not figures in this sense.
"""

import os
import re

import pytest

pytestmark = pytest.mark.single_backend

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCUMENTS = ["README.md"] + [
    os.path.join("docs", name) for name in sorted(os.listdir(os.path.join(REPO, "docs")))
]
RESULTS_FILE = re.compile(r"results/([\w.*-]+\.md)")
# A decimal figure: 0.722, 5.33, -1.1, 13.4 (in 13.4%), 2.5e-3; not part of a
# word, a version (3.15.1), a path or a commit.
FIGURE = re.compile(r"(?<![\w.])[-+]?\d+\.\d+(?:e[-+]?\d+)?(?![\w.]*\w)")


def _blocks(text):
    """Paragraphs and tables, each as (kind, text); code blocks and inline
    code (commands, config values) left out."""
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    text = re.sub(
        r"`[^`\n]*`", lambda code: code.group(0) if "results/" in code.group(0) else "", text
    )
    blocks = []
    for chunk in re.split(r"\n\s*\n", text):
        lines = chunk.strip().splitlines()
        table = [line for line in lines if line.lstrip().startswith("|")]
        prose = [line for line in lines if not line.lstrip().startswith("|")]
        if prose:
            blocks.append(("prose", "\n".join(prose)))
        if table:
            blocks.append(("table", "\n".join(table)))
    return blocks


def _cited_files(name):
    """`results/tiny_seeds_*.md` -> every file it matches."""
    if "*" not in name:
        return [name]
    pattern = re.compile(re.escape(name).replace(r"\*", ".*"))
    return sorted(n for n in os.listdir(os.path.join(REPO, "results")) if pattern.fullmatch(n))


def citations(text):
    """Each block that cites a results file: (block, [files])."""
    cited, previous_prose_files = [], []
    for kind, block in _blocks(text):
        files = [f for name in RESULTS_FILE.findall(block) for f in _cited_files(name)]
        if kind == "table" and not files:
            files = previous_prose_files
        if files:
            cited.append((block, files))
        if kind == "prose":
            previous_prose_files = files
    return cited


def _decimals(figure):
    mantissa = figure.split("e")[0]
    return len(mantissa.split(".")[1])


def found(figure, source_figures):
    """Whether `figure` (a string) is one of `source_figures` rounded to its
    precision."""
    decimals = _decimals(figure)
    value = float(figure)
    return any(
        abs(float(source) - value) <= 0.5 * 10**-decimals + 1e-12 and _decimals(source) >= decimals
        for source in source_figures
    )


def missing_figures(document):
    """(figure, block's first line, files) of each cited figure not found."""
    with open(os.path.join(REPO, document)) as file:
        text = file.read()
    missing = []
    for block, files in citations(text):
        source_figures = []
        for name in files:
            path = os.path.join(REPO, "results", name)
            # A file not made yet (bench_gpu.md) has no figures to quote.
            if os.path.exists(path):
                with open(path) as source:
                    source_figures += FIGURE.findall(source.read())
        for figure in FIGURE.findall(block):
            if not found(figure, source_figures):
                missing.append((figure, block.splitlines()[0][:80], files))
    return missing


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_cited_figure_is_in_its_results_file(document):
    assert missing_figures(document) == []


def test_a_figure_edited_by_hand_fails(tmp_path, monkeypatch):
    # The README's first score, changed in the last digit, is no longer found.
    with open(os.path.join(REPO, "README.md")) as file:
        readme = file.read()
    block = next(b for b, f in citations(readme) if "tiny_metrics.md" in f and FIGURE.findall(b))
    figure = FIGURE.findall(block)[0]
    edited = figure[:-1] + str((int(figure[-1]) + 1) % 10)
    os.makedirs(tmp_path / "docs")
    (tmp_path / "README.md").write_text(readme)
    os.symlink(os.path.join(REPO, "results"), tmp_path / "results")
    monkeypatch.setattr(__import__(__name__), "REPO", str(tmp_path))
    before = missing_figures("README.md")
    os.remove(tmp_path / "README.md")
    (tmp_path / "README.md").write_text(readme.replace(figure, edited, 1))
    assert [row[0] for row in missing_figures("README.md") if row not in before] == [edited]


def test_the_figure_rules():
    assert FIGURE.findall("BLEU-4 0.722 (+13.4%), keras 3.15.1, commit 5f05a96, 2 cores") == [
        "0.722",
        "+13.4",
    ]
    assert found("0.722", ["0.7224"]) and not found("0.722", ["0.7234"])
    assert not found("0.7224", ["0.722"])  # more precise than the source
    assert found("13.4", ["+13.4"]) and found("5.33", ["5.3349"])
