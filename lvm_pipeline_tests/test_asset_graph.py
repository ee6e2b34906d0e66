"""The asset graph, snapshotted: a change to assets, dependencies, checks or partitions shows in review.

After a deliberate change, rewrite the snapshot and commit it with the change:
    .venv/bin/python -m lvm_pipeline_tests.test_asset_graph
"""

from __future__ import annotations

import json
from pathlib import Path

from lvm_pipeline.defs import defs

SNAPSHOT = Path(__file__).with_name("asset_graph.json")


def asset_graph() -> dict:
    """Asset key -> dependencies, partitions, group and checks (name, blocking); sensors and jobs by name."""
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        checks = sorted((c.name, bool(graph.get(c).blocking)) for c in node.check_keys)
        assets[key.to_user_string()] = {
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "partitions": _partitions(node.partitions_def),
            "group": node.group_name,
            "checks": [{"name": name, "blocking": blocking} for name, blocking in checks],
        }
    return {"assets": assets,
            "sensors": sorted(s.name for s in defs.sensors),
            "jobs": sorted(j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__"))}


def _partitions(partitions_def) -> str | None:
    if partitions_def is None:
        return None
    name = getattr(partitions_def, "name", None)
    return f"{type(partitions_def).__name__}({name})" if name else type(partitions_def).__name__


def test_the_asset_graph_matches_its_snapshot():
    expected = json.loads(SNAPSHOT.read_text())
    assert asset_graph() == expected, (
        "the asset graph changed: if that is intended, run `.venv/bin/python -m lvm_pipeline_tests.test_asset_graph` "
        "and commit asset_graph.json with the change")


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(asset_graph(), indent=2) + "\n")
    print(f"wrote {SNAPSHOT}")
