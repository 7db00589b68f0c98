"""Stage `features`: import features (demo / local / download) and pack every split to HDF5."""
from pathlib import Path

from amr.params import Params
from amr.pipeline import DEMO_DIR, FEATURES_DIR, demo_layout, layout_from_params, pack_all

ROOT = Path.cwd()


def main() -> None:
    params = Params.load()
    source = params.source
    if source.source == "demo":
        from amr.data.demo import DemoSizes, make_demo_dataset

        make_demo_dataset(DEMO_DIR, seed=source.demo.seed, sizes=DemoSizes(**source.demo.sizes))
        layout, label = demo_layout(DEMO_DIR), f"demo (seed {source.demo.seed})"
    elif source.source == "local":
        layout, label = layout_from_params(source.local, ROOT), "local"
    elif source.source == "download":
        from amr.data.download import fetch_all

        fetch_all(source.download, ROOT)
        layout, label = layout_from_params(source.download.layout, ROOT), "download"
    else:
        raise SystemExit(f"params.yaml: data.source must be demo, local or download, not {source.source!r}")
    pack_all(layout, params.data, FEATURES_DIR, feature_source=label)


if __name__ == "__main__":
    main()
