"""DVC stage `download`: fetches and verifies the MovieLens release zip named by data.dataset.

Its output folder is cached by DVC, so a second `dvc repro`, or switching datasets back and forth
(DVC's run cache), never downloads the same release twice. For synthetic and file data there is
nothing to fetch and the folder holds only release.json.
"""

from pathlib import Path

from movierec.core.config import load_params
from movierec.core.files import write_json
from movierec.core.releases import release
from movierec.core.stage import run_stage, stage_parser
from movierec.data.download import download


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--out-dir", required=True, help="output folder for <release>.zip")
    args = parser.parse_args()
    dataset = load_params(args.params).data.dataset
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    if dataset in ("synthetic", "file"):
        write_json({"dataset": dataset, "download": None}, out_dir / "release.json")
        print(f"download: data.dataset={dataset}: nothing to download")
        return
    rel = release(dataset)
    zip_path = download(rel, out_dir / f"{rel.name}.zip")
    write_json({"dataset": rel.name, "url": rel.url, "size": rel.size, "sha256": rel.sha256},
               out_dir / "release.json")
    print(f"download: {rel.url} -> {zip_path} ({rel.size:,} bytes, sha256 verified)")


if __name__ == "__main__":
    run_stage(main)
