"""DVC stage `plots_page`: the HTML template that `dvc plots show` fills (.dvc/config's
plots.html_template points at it), with Vega, Vega-Lite and vega-embed inline from the
vl-convert-python wheel, so that the charts draw with no network."""

from movierec.core.stage import run_stage, stage_parser
from movierec.evaluate.plots_page import write_template


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--out", required=True, help="output: the page template (html)")
    args = parser.parse_args()
    path = write_template(out=args.out)
    print(f"plots_page: wrote {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    run_stage(main)
