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

# The views as the tests' user (exec: every metric) sees them: a retired metric answers
# no more, so no view offers it.
for _view in VIEWS.values():
    _view["metrics"] = [m for m in _view.get("metrics", []) if METRICS[m].get("status") != "retired"]


def comment(item):
    """The comment kpitables shows: `label: description`, after the lifecycle status of a
    metric that is not active (`[deprecated: use revenue] `)."""
    status = item.get("status", "active") if item.get("name") in METRICS else "active"
    note = ""
    if status != "active":
        note = f"[{status}: use {item['replaced_by']}] " if "replaced_by" in item else f"[{status}] "
    return f"{note}{item['label']}: {item['description']}"
