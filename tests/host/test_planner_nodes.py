"""Layout Planner and Layout Check nodes inside real ComfyUI, against a scripted chat server on 127.0.0.1."""
from __future__ import annotations

import json

import pytest

from instdiff_testkit.chat_server import ChatServer, Reply


def test_planner_node_returns_a_checked_layout_and_caches(pack, tmp_path):
    planner = pack.NODE_CLASS_MAPPINGS["InstanceLayoutPlanner"]()
    check = pack.NODE_CLASS_MAPPINGS["InstanceLayoutCheck"]()
    reply = {"caption": "a dog and a ball in a park", "width": 512, "height": 512,
             "annos": [{"caption": "a brown dog", "bbox": [40, 200, 300, 480], "category_name": "dog"},
                       {"caption": "a red ball", "bbox": [350, 400, 420, 470], "category_name": "sports ball"}]}
    with ChatServer([Reply.content("```json\n" + json.dumps(reply) + "\n```")]) as server:
        args = dict(description="a dog and a ball in a park", width=512, height=512, max_instances=5,
                    base_url=server.base_url, model="scripted", api_key_env="INSTDIFF_TEST_NO_KEY", timeout=10.0,
                    seed=7)
        out = planner.plan(**args)
        layout, caption, report = out["result"]
        again = planner.plan(**args)["result"]
        assert len(server.requests) == 1, "same inputs must come from the cache, not a second request"
    assert caption == "a dog and a ball in a park" and len(layout.instances) == 2
    assert layout.instances[0].bbox == (40.0, 200.0, 300.0, 480.0)          # xyxy detected and reported
    assert "xyxy" in report
    assert any("xyxy" in w for w in out["ui"]["instdiff_warnings"]), "the repairs are shown on the node"
    assert again[0] == layout
    warnings, passthrough = check.check(layout)["result"]
    assert passthrough is layout and isinstance(warnings, str)


def test_planner_node_error_shows_the_reply(pack):
    planner = pack.NODE_CLASS_MAPPINGS["InstanceLayoutPlanner"]()
    with ChatServer([Reply.content("Sorry, I cannot draw boxes today.")]) as server:
        with pytest.raises(Exception) as err:
            planner.plan(description="a cat", width=512, height=512, max_instances=3, base_url=server.base_url,
                         model="scripted", api_key_env="INSTDIFF_TEST_NO_KEY", timeout=10.0, seed=1)
    assert "cannot draw boxes" in str(err.value)
