"""`dvc plots show` with the generated offline template: Vega inline, nothing from a CDN.

The template is the `plots_page` stage's output. The command tests run DVC in a tiny temporary
project (git init, dvc init, one CSV plot and the project's own .dvc/config and .gitignore); the
e2e test runs `dvc repro` then `dvc plots show` in a fresh copy of the whole project, with no
other step, as on a teammate's clone. Nothing here needs a network.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import vl_convert
import yaml
from dvc.config import Config
from dvc_render.html import HTML
from dvc_render.vega import VegaRenderer
from support.pipeline import dvc, env_for, run

from movierec.evaluate import plots_page
from movierec.evaluate.plots_page import PLOT_DIVS, REFRESH_TAG, SCRIPTS, PlotsPageError

ROOT = Path(__file__).resolve().parents[2]
FAKE_BUNDLE = "window.vegaEmbed = function (el, spec) { return Promise.resolve(); };"
# A src= or href= that leaves the page: http(s)://... or protocol-relative //...
EXTERNAL_REF = re.compile(r"""\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)
CSV = "epoch,loss\n1,0.9\n2,0.5\n3,0.25\n"


def _dvc_fill(template: str) -> str:
    """The page DVC writes from ``template`` for one Vega chart (dvc_render's own code)."""
    return (HTML(template).with_scripts(VegaRenderer.SCRIPTS)
            .with_element("<div id='chart'></div>").embed())


def test_template_keeps_dvc_placeholders_and_drops_the_cdn_scripts():
    template = plots_page.page_template(FAKE_BUNDLE, "a test bundle")
    assert template.count(PLOT_DIVS) == 1 and REFRESH_TAG in template
    assert SCRIPTS not in template
    assert f"\n{FAKE_BUNDLE}\n" in template
    page = _dvc_fill(template)
    assert "cdn.jsdelivr.net" in VegaRenderer.SCRIPTS  # what DVC would have added
    assert not EXTERNAL_REF.search(page), page
    assert re.findall(r"<script[^>]*>", page) == ["<script>"]  # inline, no src
    # The bundle runs before the charts' divs, which call vegaEmbed as the page is parsed.
    assert page.index(FAKE_BUNDLE) < page.index("<div id='chart'>")


@pytest.mark.parametrize("bad", ["</script>", "</SCRIPT >", PLOT_DIVS, SCRIPTS, REFRESH_TAG])
def test_template_rejects_a_bundle_that_would_break_the_page(bad):
    with pytest.raises(PlotsPageError, match="the JavaScript bundle contains"):
        plots_page.page_template(f"{FAKE_BUNDLE} '{bad}';", "a test bundle")


def test_template_rejects_a_bundle_without_vega_embed():
    with pytest.raises(PlotsPageError, match=r"never sets window.vegaEmbed \(expected"):
        plots_page.page_template("window.vega = {};", "a test bundle")


def test_template_path_resolves_like_dvc(tmp_path):
    dvc_dir = tmp_path / ".dvc"
    assert plots_page.resolve_template_path(dvc_dir, "plots/offline.html") == \
        dvc_dir / "plots/offline.html"
    assert plots_page.resolve_template_path(dvc_dir, "../plots/offline.html") == \
        tmp_path / "plots/offline.html"
    assert plots_page.resolve_template_path(dvc_dir, "/srv/page.html") == Path("/srv/page.html")
    with pytest.raises(PlotsPageError, match=r"plots.html_template is not set in .*\(expected"):
        plots_page.resolve_template_path(dvc_dir, None)


def _paths() -> dict:
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    return next(v["paths"] for v in spec["vars"] if isinstance(v, dict) and "paths" in v)


def test_the_config_names_the_plots_page_stage_output():
    """.dvc/config's plots.html_template (read from .dvc/) is the file the plots_page stage
    writes, a cached output (restored by `dvc pull` or the run cache, git-ignored by DVC)."""
    configured = Config(dvc_dir=str(ROOT / ".dvc")).load_one("repo")["plots"]["html_template"]
    assert configured == plots_page.SUGGESTED_PATH
    target = _paths()["plots_page"]
    assert plots_page.resolve_template_path(ROOT / ".dvc", configured) == ROOT / target
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["plots_page"]
    assert stage["cmd"] == "python stages/plots_page.py --out ${paths.plots_page}"
    assert stage["outs"] == ["${paths.plots_page}"]  # cached: no `cache: false`
    assert "params" not in stage
    assert "plots-template" not in (ROOT / "Makefile").read_text()  # no extra install step


def make_project(repo: Path) -> Path:
    """A DVC project with one CSV plot and this project's plots.html_template setting."""
    repo.mkdir(parents=True)
    run(repo, "git", "init", "-q", "-b", "main")
    dvc(repo, "init", "-q")
    for name in (".dvc/config", ".dvc/.gitignore", ".gitignore"):
        shutil.copy2(ROOT / name, repo / name)
    (repo / "training.csv").write_text(CSV)
    (repo / "dvc.yaml").write_text("plots:\n  - training.csv:\n      x: epoch\n      y: loss\n")
    return repo


def movierec(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "movierec", *args], cwd=repo,
                          env=env_for(repo), capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.slow
def test_plots_show_writes_a_page_that_needs_no_network(tmp_path):
    repo = make_project(tmp_path / "project")
    made = movierec(repo, "plots-template")  # by default, where DVC reads it
    assert made.returncode == 0, made.stderr
    path = repo / _paths()["plots_page"]
    assert made.stdout.startswith(f"wrote {path} ("), made.stdout
    run(repo, "git", "check-ignore", "-q", _paths()["plots_page"])  # never committed

    out = dvc(repo, "plots", "show")
    assert "dvc_plots/index.html" in out, out
    page = (repo / "dvc_plots" / "index.html").read_text(encoding="utf-8")
    assert not EXTERNAL_REF.search(page)
    assert "cdn.jsdelivr.net" not in page
    # The page is the generated template, filled: Vega's code inline, then the chart.
    head = path.read_text(encoding="utf-8").split(PLOT_DIVS)[0].replace(REFRESH_TAG, "")
    assert page.startswith(head)
    assert "window.vegaEmbed=" in head  # the global that DVC's divs call
    assert f"Vega {vl_convert.get_vega_version()}" in head
    assert "vegaEmbed('#training_csv', spec);" in page
    assert '{"epoch": "3", "loss": "0.25", "rev": "workspace"}' in page


@pytest.mark.slow
def test_plots_template_out_writes_elsewhere(tmp_path):
    repo = make_project(tmp_path / "project")
    made = movierec(repo, "plots-template", "--out", "elsewhere/page.html")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("wrote elsewhere/page.html ("), made.stdout
    page = (repo / "elsewhere/page.html").read_text(encoding="utf-8")
    assert PLOT_DIVS in page and "window.vegaEmbed=" in page
    assert not (repo / _paths()["plots_page"]).exists()


@pytest.mark.slow
def test_plots_show_without_the_generated_template_fails(tmp_path):
    # What a checkout sees before its first `dvc repro` (DVC 3.67.1 reads the missing path as
    # the template text itself): docs/dvc.md names this message and what fixes it.
    repo = make_project(tmp_path / "project")
    done = subprocess.run([sys.executable, "-m", "dvc", "plots", "show"], cwd=repo,
                          env=env_for(repo), capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode != 0
    assert "HTML template has to contain '{plot_divs}'" in done.stdout + done.stderr


@pytest.mark.slow
def test_plots_template_without_the_setting_is_one_clear_error(tmp_path):
    repo = make_project(tmp_path / "project")
    dvc(repo, "config", "--unset", "plots.html_template")
    done = movierec(repo, "plots-template")
    assert done.returncode == 1
    assert done.stderr.startswith("error: plots.html_template is not set in "), done.stderr
    assert "(expected e.g. `dvc config plots.html_template ../plots/offline.html`)" in \
        done.stderr


@pytest.mark.e2e
def test_repro_then_plots_show_draws_offline_with_no_other_step(trained_project, tmp_path):
    """A fresh copy of the project (no `make install`, no plots-template): `dvc repro` writes
    the template, and `dvc plots show` fills it with the pipeline's charts, Vega inline."""
    target = _paths()["plots_page"]
    out = trained_project.repro_log  # the session's first `dvc repro` of a fresh copy
    repo = trained_project.copy(tmp_path / "project")
    assert "Running stage 'plots_page'" in out, out
    run(repo, "git", "check-ignore", "-q", target)  # generated, never committed
    assert run(repo, "git", "ls-files", target) == ""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["plots_page"]
    assert [o["path"] for o in lock["outs"]] == [target]  # a cached output of its own stage
    # Cached like any output: DVC puts it back (as `dvc pull` would from a remote).
    (repo / target).unlink()
    dvc(repo, "checkout")
    assert (repo / target).is_file()

    shown = dvc(repo, "plots", "show")
    assert "dvc_plots/index.html" in shown, shown
    page = (repo / "dvc_plots" / "index.html").read_text(encoding="utf-8")
    assert not EXTERNAL_REF.search(page)
    assert "cdn.jsdelivr.net" not in page
    head = (repo / target).read_text(encoding="utf-8").split(PLOT_DIVS)[0].replace(
        REFRESH_TAG, "")
    assert page.startswith(head) and "window.vegaEmbed=" in head  # Vega inline, first
    for plot in ("loss", "curves", "ranking", "per_star"):  # dvc.yaml's plots, a chart each
        assert f'<div id = "{plot}">' in page
        assert f"vegaEmbed('#{plot}', spec);" in page
    # Every plot finds its files and fields (a rating run: the curves' validation is NaN).
    shown = json.loads(dvc(repo, "plots", "show", "--json"))
    assert not shown.get("errors"), shown["errors"]
    bars = {d["bar"] for d in shown["data"]["ranking"][0]["content"]["data"]["values"]}
    assert {"NDCG@10 model", "NDCG@10 ease", "precision@10 popularity"} <= bars
