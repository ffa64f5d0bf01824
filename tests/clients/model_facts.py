"""What the demo model files say: the ground truth for catalog metadata checks."""

import pathlib
import tomllib

MODEL = pathlib.Path(__file__).resolve().parents[2] / "semantic" / "demo"


def _items(key):
    out = {}
    for path in sorted(MODEL.glob("*.toml")):
        for item in tomllib.loads(path.read_text()).get(key, []):
            out[item["name"]] = item
    return out


VIEWS = _items("views")
METRICS = _items("metrics")
DIMENSIONS = _items("dimensions")


def comment(item):
    """The comment kpitables shows: `label: description`."""
    return f"{item['label']}: {item['description']}"
