"""The README and docs/ point at things that exist.

Every relative link resolves to a file of the repository, and every anchor to a heading of the
target under GitHub's slug rules; every ``-S key=value`` names a key of params.yaml with a value
DVC can parse; the README's named configurations are experiments.yaml's. The helpers are tested
on small hand-written pages first, so that the checks cannot pass by finding nothing.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
# [text](target) and ![alt](target), with an optional "title"; the text may span lines.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
EXTERNAL = ("http://", "https://", "mailto:")
SET_FLAGS = ("-S", "--set-param")


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def split_fenced(text: str) -> tuple[str, list[str]]:
    """The page's prose, with every fenced block's lines blanked (so line numbers stay), and
    the fenced blocks' contents."""
    prose, blocks, block, fence = [], [], [], None
    for line in text.splitlines():
        match = FENCE.match(line)
        if fence is None and match:
            fence, block = match.group(1), []
            prose.append("")
        elif fence is not None and re.fullmatch(
                rf" {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*", line):
            fence = None
            blocks.append("\n".join(block))
            prose.append("")
        elif fence is not None:
            block.append(line)
            prose.append("")
        else:
            prose.append(line)
    if fence is not None:  # an unclosed fence runs to the end of the page, as on GitHub
        blocks.append("\n".join(block))
    return "\n".join(prose), blocks


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lowercased, punctuation but ``-`` and ``_``
    dropped, each space a ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> list[str]:
    """The page's heading anchors in order; a repeated heading gets ``-1``, ``-2``, ..."""
    prose, _ = split_fenced(text)
    seen: dict[str, int] = {}
    found = []
    for line in prose.splitlines():
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(1))
        name = base if base not in seen else f"{base}-{seen[base]}"
        seen[base] = seen.get(base, 0) + 1
        found.append(name)
    return found


def links(text: str) -> list[str]:
    """Link and image targets outside fenced blocks and code spans."""
    prose, _ = split_fenced(text)
    # A link written inside a code span is code; code spans inside a link's text are kept.
    prose = CODE_SPAN.sub(lambda m: "" if "](" in m.group(2) else m.group(0), prose)
    return [m.group(1) for m in LINK.finditer(prose)]


def link_problems(page: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with each relative link of ``page``: a missing file, a file outside the
    repository, or an anchor that is no heading of the target."""
    problems = []
    for target in links(page.read_text(encoding="utf-8")):
        if not target or target.startswith(EXTERNAL):
            continue
        path_part, _, anchor = target.partition("#")
        path = (page.parent / unquote(path_part)).resolve() if path_part else page.resolve()
        where = f"{page.name}: ({target})"
        if not path.is_relative_to(root.resolve()):
            problems.append(f"{where}: outside the repository")
        elif not path.exists():
            problems.append(f"{where}: no such file")
        elif anchor and path.suffix != ".md":
            problems.append(f"{where}: an anchor into a file that is not Markdown")
        elif anchor and unquote(anchor) not in anchors(path.read_text(encoding="utf-8")):
            problems.append(f"{where}: no heading #{anchor} in {path.name}")
    return problems


def logical_lines(block: str) -> list[str]:
    """A code block's command lines, backslash-continued lines joined, console prompts off."""
    lines, current = [], ""
    for line in block.splitlines():
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    if current:
        lines.append(current)
    return [re.sub(r"^\s*\$\s+", "", line) for line in lines]


def command_snippets(text: str) -> list[str]:
    """Every command line of the fenced blocks and every code span of the prose."""
    prose, blocks = split_fenced(text)
    snippets = [line for block in blocks for line in logical_lines(block)]
    snippets += [m.group(2).replace("\\\n", " ") for m in CODE_SPAN.finditer(prose)]
    return snippets


def words(snippet: str) -> list[str]:
    try:
        return shlex.split(snippet, comments=True)
    except ValueError:  # not a shell command (an unbalanced quote in prose or output)
        return []


def set_pairs(snippet: str) -> list[tuple[str, str]]:
    """The ``key=value`` pairs that ``-S``/``--set-param`` give in one command."""
    pairs, tokens = [], words(snippet)
    for i, token in enumerate(tokens):
        if token in SET_FLAGS and i + 1 < len(tokens):
            value = tokens[i + 1]
        elif token.startswith("--set-param="):
            value = token.split("=", 1)[1]
        else:
            continue
        key, sep, raw = value.partition("=")
        pairs.append((key, raw if sep else None))
    return pairs


def param_problems(text: str, params: dict) -> list[str]:
    """Each ``-S`` pair whose key is no leaf of ``params`` or whose value does not parse."""
    problems = []
    for snippet in command_snippets(text):
        if not any(flag in snippet for flag in SET_FLAGS):
            continue
        for key, raw in set_pairs(snippet):
            if key == "..." and raw is None:  # "-S ...": a placeholder, not a pair
                continue
            node = params
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if node is None or isinstance(node, dict):
                problems.append(f"-S {key}: no such key in params.yaml")
            if raw is None:
                problems.append(f"-S {key}: no value (expected key=value)")
                continue
            for item in raw.split(","):  # a comma list is a queue grid, one value each
                try:
                    yaml.safe_load(item)
                except yaml.YAMLError:
                    problems.append(f"-S {key}={raw}: {item!r} does not parse as YAML")
    return problems


def named_runs(text: str) -> dict[str, list[list[tuple[str, object]]]]:
    """Each ``dvc exp run -n NAME ...`` command of the page's code blocks, by name: its ``-S``
    pairs in order, values parsed as YAML (as DVC parses them)."""
    _, blocks = split_fenced(text)
    runs: dict[str, list[list[tuple[str, object]]]] = {}
    for line in (line for block in blocks for line in logical_lines(block)):
        tokens = words(line)
        names = [tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t in ("-n", "--name")]
        if tokens[:3] == ["dvc", "exp", "run"] and names:
            pairs = [(key, yaml.safe_load(raw)) for key, raw in set_pairs(line) if raw]
            runs.setdefault(names[0], []).append(pairs)
    return runs


def load_yaml(path: Path) -> dict:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


# Known answers: the helpers on small hand-written pages.

PAGE = """# Title

## Setup: the `make` targets
text [to other](other.md#setup-the-make-targets) and [self](#title)

```bash
[not a link](missing.md)
dvc exp run -S nowhere.key=1
```

## Setup: the `make` targets

![figure](img.png) and [gone](gone.md), [bad anchor](other.md#nowhere)
"""


def test_slug_follows_githubs_rules():
    assert slug("Setup: the `make` targets") == "setup-the-make-targets"
    assert slug("Beyond the tutorial: baselines, regularisation") == \
        "beyond-the-tutorial-baselines-regularisation"
    assert slug("ML-20M on a 2-core machine") == "ml-20m-on-a-2-core-machine"
    assert slug("`train.table_updates` and the l2_dense key") == \
        "traintable_updates-and-the-l2_dense-key"
    assert slug("See [the twin](data.md#x) (1M)") == "see-the-twin-1m"


def test_a_repeated_heading_gets_a_numbered_anchor():
    assert anchors(PAGE) == ["title", "setup-the-make-targets", "setup-the-make-targets-1"]
    assert anchors("# A\n```\n# not a heading\n```\n# A\n# A\n") == ["a", "a-1", "a-2"]


def test_links_in_fenced_blocks_and_code_spans_are_ignored():
    assert links(PAGE) == ["other.md#setup-the-make-targets", "#title", "img.png", "gone.md",
                           "other.md#nowhere"]
    assert links("`[x](code.md)` and [y](\n real.md)") == ["real.md"]
    assert links("~~~\n[x](a.md)\n~~~\n[z](b.md)") == ["b.md"]


def test_broken_links_and_anchors_are_reported(tmp_path):
    (tmp_path / "page.md").write_text(PAGE)
    (tmp_path / "other.md").write_text("# Other\n## Setup: the make targets\n")
    (tmp_path / "img.png").write_bytes(b"")
    assert link_problems(tmp_path / "page.md", tmp_path) == [
        "page.md: (gone.md): no such file",
        "page.md: (other.md#nowhere): no heading #nowhere in other.md",
    ]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "up.md").write_text("[a](../page.md#title) [b](../../x.md) "
                                            "[c](https://example.org/#nowhere)")
    assert link_problems(tmp_path / "sub" / "up.md", tmp_path) == [
        "up.md: (../../x.md): outside the repository"]


def test_continued_lines_are_one_command():
    block = "$ dvc exp run -n x -S a.b=1 \\\n    -S a.c=true\necho done"
    assert logical_lines(block) == ["dvc exp run -n x -S a.b=1      -S a.c=true", "echo done"]
    assert set_pairs(logical_lines(block)[0]) == [("a.b", "1"), ("a.c", "true")]
    assert set_pairs("dvc exp run --set-param=a.b=2 --set-param a.c=3  # -S a.d=4") == [
        ("a.b", "2"), ("a.c", "3")]


def test_unknown_keys_and_bad_values_are_reported():
    params = {"train": {"epochs": 15, "latent_dim": 10}, "data": {"synthetic": {"seed": 42}}}
    text = PAGE + ("\n`dvc exp run -S train.epochs=5 -S data.synthetic.seed=7`"
                   "\n```\ndvc exp run --queue -S 'train.latent_dim=10,32' -S train.epoch=5 \\\n"
                   "  -S data.synthetic=1 -S train.epochs=[1 -S ... -S\n```\n")
    assert param_problems(text, params) == [
        "-S nowhere.key: no such key in params.yaml",
        "-S train.epoch: no such key in params.yaml",
        "-S data.synthetic: no such key in params.yaml",
        "-S train.epochs=[1: '[1' does not parse as YAML",
    ]  # "-S ..." is a placeholder; a trailing "-S" has nothing to check


def test_named_runs_are_read_with_yaml_values():
    text = ("```\ndvc exp run -n tuned -S train.latent_dim=128 -S train.refit=true\n"
            "dvc exp run -n ranking -S train.objective=bce \\\n  -S train.l2_embeddings=0.0001\n"
            "dvc exp run -S train.epochs=5\n```\n`dvc exp run -n inline -S train.epochs=1`\n")
    assert named_runs(text) == {
        "tuned": [[("train.latent_dim", 128), ("train.refit", True)]],
        "ranking": [[("train.objective", "bce"), ("train.l2_embeddings", 0.0001)]],
    }


# The project's pages.

PAGES = doc_files()
DOCS = ["architecture", "benchmarks", "data", "development", "distributed", "dvc", "evaluation",
        "ranking", "recommendations", "reliability", "serving", "speed", "tuning"]


def test_the_readme_is_short_and_docs_has_one_page_per_topic():
    assert (ROOT / "README.md").stat().st_size <= 12_000
    assert [p.stem for p in PAGES[1:]] == DOCS


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    found = links(page.read_text(encoding="utf-8"))
    assert found, f"{page.name} links nowhere"
    assert page.name == "README.md" or "../README.md" in found, "no link back to the README"
    assert link_problems(page) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_set_param_names_a_key_of_params_yaml(page):
    assert param_problems(page.read_text(encoding="utf-8"), load_yaml(ROOT / "params.yaml")) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_page_cites_a_file_outside_the_repository(page):
    text = page.read_text(encoding="utf-8")
    assert re.findall(r"(?<![\w/.-])shared/(?:seed|docs)/\S*", text) == []


def test_the_readme_shows_each_named_configuration_once_as_experiments_yaml_has_it():
    named = load_yaml(ROOT / "experiments.yaml")
    assert set(named) >= {"tuned", "ranking"}
    readme = named_runs((ROOT / "README.md").read_text(encoding="utf-8"))
    for name, overrides in named.items():
        assert len(readme.get(name, [])) == 1, f"the README has {name}'s command not once"
        pairs = readme[name][0]
        assert len(dict(pairs)) == len(pairs), f"{name}: a -S key given twice"
        assert dict(pairs) == overrides, name
    for page in PAGES[1:]:  # a page that repeats a named command repeats it exactly
        for name, runs in named_runs(page.read_text(encoding="utf-8")).items():
            if name in named:
                assert [dict(pairs) for pairs in runs] == [named[name]] * len(runs), page.name
