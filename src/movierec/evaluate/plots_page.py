"""An HTML template that lets `dvc plots show` draw its charts offline.

DVC fills its page template with one `<div>` per Vega-Lite chart, each calling
`vegaEmbed('#id', spec)`, and, where the template says `{scripts}`, three `<script src>` tags
that load Vega, Vega-Lite and vega-embed from a CDN: offline, only the PNG figures appear. This
template has no `{scripts}`: it carries the three libraries inline instead, from the JavaScript
bundle that the vl-convert-python wheel ships. The file is a pipeline output: dvc.yaml's
`plots_page` stage writes it (to ``paths.plots_page``) on `dvc repro`, so any checkout where the
package is installed gets it with no extra step, and DVC's cache (`dvc pull`, the run cache)
restores it like any other output. It is never committed: the repository holds no third-party
JavaScript. `python -m movierec plots-template` writes it by hand.
"""

from __future__ import annotations

import os
from pathlib import Path

from movierec.core.errors import MovieRecError
from movierec.core.files import atomic_path

# The placeholders dvc_render's HTML.embed replaces: it refuses a template without PLOT_DIVS;
# SCRIPTS is where it would put the CDN tags, so this template must not contain it.
PLOT_DIVS = "{plot_divs}"
REFRESH_TAG = "{refresh_tag}"
SCRIPTS = "{scripts}"
# DVC's chart templates declare Vega-Lite v5 ($schema .../vega-lite/v5.json) and its CDN tags
# load vega-lite@5: the newest v5 that vl-convert ships compiles them as DVC intends.
VEGA_LITE_VERSION = "5.21"
# What `dvc config plots.html_template` should say; DVC reads a relative path from .dvc/, so
# this is dvc.yaml's paths.plots_page (plots/offline.html at the project root) seen from .dvc/.
CONFIG_KEY = "plots.html_template"
SUGGESTED_PATH = "../plots/offline.html"
# Text that must not occur in the bundle: `</script` (any case) would end the inline script
# early, and DVC would fill in a placeholder wherever it occurs, inside the code too.
FORBIDDEN_IN_BUNDLE = ("</script", PLOT_DIVS, REFRESH_TAG, SCRIPTS)


class PlotsPageError(MovieRecError):
    """The page template cannot be built or its configured path is missing."""


def page_template(bundle: str, origin: str) -> str:
    """The page: ``bundle`` (JavaScript that defines window.vegaEmbed) inline in <head>, DVC's
    placeholders in place. ``origin`` says in an HTML comment where the bundle came from."""
    lowered = bundle.lower()
    for text in FORBIDDEN_IN_BUNDLE:
        if text.lower() in lowered:
            raise PlotsPageError(f"the JavaScript bundle contains {text!r} (expected none: it "
                                 "would break the inline <script> or be replaced by DVC)")
    if "window.vegaEmbed" not in bundle:
        raise PlotsPageError(f"a JavaScript bundle of {len(bundle)} characters that never sets "
                             "window.vegaEmbed (expected one that does: DVC's divs call it)")
    return "\n".join([
        "<!DOCTYPE html>",
        "<html>",
        "<head>",
        '<meta charset="utf-8">',
        REFRESH_TAG,
        "<title>DVC Plot</title>",
        f"<!-- {origin}; written by the plots_page stage (dvc.yaml), not committed. -->",
        # A classic script, not a module: DVC's divs call vegaEmbed as the page is parsed, before
        # a module would run. The function scope keeps the bundle's many top-level names out of
        # the page's global scope, where a `let`/`const` could clash with the divs' `var spec`;
        # "use strict" keeps the semantics of the ES module the bundle was built from.
        "<script>",
        "(function () {",
        '"use strict";',
        bundle,
        "})();",
        "</script>",
        "<style>table { border-spacing: 15px; }</style>",
        "</head>",
        "<body>",
        PLOT_DIVS,
        "</body>",
        "</html>",
        "",
    ])


def resolve_template_path(dvc_dir: str | Path, configured: str | None) -> Path:
    """Where DVC 3.67 looks for ``plots.html_template``: as given if absolute, else relative to
    .dvc/ (DVC joins the two; ``..`` is collapsed here, which names the same file)."""
    if not configured:
        raise PlotsPageError(f"{CONFIG_KEY} is not set in {dvc_dir}/config (expected e.g. "
                             f"`dvc config {CONFIG_KEY} {SUGGESTED_PATH}`)")
    if os.path.isabs(configured):
        return Path(configured)
    return Path(os.path.normpath(Path(dvc_dir) / configured))


def configured_template_path(root: str | Path = ".") -> Path:
    """The template path that `dvc plots show` in ``root`` will read (DVC's merged config)."""
    from dvc.config import Config

    dvc_dir = Path(root).resolve() / ".dvc"
    if not dvc_dir.is_dir():
        raise PlotsPageError(f"{dvc_dir} does not exist (expected the root of a DVC project)")
    return resolve_template_path(dvc_dir, Config(dvc_dir=str(dvc_dir))["plots"].get(
        "html_template"))


def vega_bundle(vl_version: str = VEGA_LITE_VERSION) -> tuple[str, str]:
    """vl-convert's bundle of vega-embed, Vega-Lite and Vega, and a line naming their versions.
    Its default snippet sets window.vegaEmbed, window.vegaLite and window.vega, the globals the
    CDN scripts would define."""
    import vl_convert

    bundle = vl_convert.javascript_bundle(vl_version=vl_version)
    origin = (f"Vega {vl_convert.get_vega_version()}, Vega-Lite {vl_version} and vega-embed "
              f"{vl_convert.get_vega_embed_version()}, bundled by vl-convert-python")
    return bundle, origin


def write_template(root: str | Path = ".", out: str | Path | None = None) -> Path:
    """Writes the page template to ``out`` (the `plots_page` stage passes paths.plots_page), by
    default to the path the project in ``root`` configures; returns that path."""
    path = Path(out) if out is not None else configured_template_path(root)
    page = page_template(*vega_bundle())
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
