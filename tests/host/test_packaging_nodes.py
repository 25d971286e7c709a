"""Every node the pack registers has a help page (web/docs/<key>.md, ComfyUI's node documentation panel)."""
from __future__ import annotations

import os

from instdiff_testkit import comfy_harness


def test_every_node_has_a_help_page(pack):
    docs = os.path.join(comfy_harness.REPO_ROOT, "web", "docs")
    missing = [k for k in pack.NODE_CLASS_MAPPINGS if not os.path.isfile(os.path.join(docs, f"{k}.md"))]
    assert not missing, f"no web/docs/<key>.md for {missing}"
    for key, title in pack.NODE_DISPLAY_NAME_MAPPINGS.items():
        with open(os.path.join(docs, f"{key}.md"), encoding="utf-8") as f:
            first = f.readline().strip()
        assert first == f"# {title}", f"{key}.md starts with {first!r}, not the node's title {title!r}"


def test_main_nodes_are_found_by_the_words_users_search(pack):
    aliases = {k: getattr(c, "SEARCH_ALIASES", []) for k, c in pack.NODE_CLASS_MAPPINGS.items()}
    for word in ("regional prompt", "gligen", "layout", "bounding box"):
        assert word in aliases["InstanceDiffusionConditioning"], word
    assert "bounding box" in aliases["InstanceLayoutEditor"] and "gligen" in aliases["ApplyUniFusion"]
    unknown = set(pack.nodes.search_aliases.SEARCH_ALIASES) - set(pack.NODE_CLASS_MAPPINGS)
    assert not unknown, f"aliases for nodes that do not exist: {unknown}"
