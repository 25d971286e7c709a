"""Layout planner against a real HTTP server on 127.0.0.1 (tests/chat_server.py) replaying scripted replies.

Nothing here leaves the machine: every URL is the local test server or a closed local port.
"""
import json
import os

import pytest

from instdiff_testkit.pack_modules import node_module as pack_module
from instdiff_testkit.chat_server import ChatServer, Reply, closed_port_url
from instancediffusion_core.layout.types import MAX_INSTANCES
from instancediffusion_core.planner.plan import (PlanCache, PlannerError, PlanReplyError, PlanRequest, build_messages,
                                            extract_json, parse_layout_reply, plan_layout)

KEY_ENV = "INSTDIFF_TEST_PLANNER_KEY"
SECRET = "sk-test-Zq81-never-show-me"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def layout_json(annos, caption="a park with a dog and a person", width=512, height=512, **extra):
    return json.dumps({"caption": caption, "width": width, "height": height, "annos": annos, **extra})


GOOD = layout_json([
    {"caption": "a person in a red coat", "bbox": [100, 150, 60, 200], "category_name": "person"},
    {"caption": "a brown dog", "bbox": [200, 290, 80, 60], "category_name": "dog"},
    {"caption": "a wooden bench", "bbox": [320, 260, 150, 90], "category_name": "bench"},
])
GOOD_CORNERS = [(100, 150, 160, 350), (200, 290, 280, 350), (320, 260, 470, 350)]


@pytest.fixture
def server():
    servers = []

    def start(*replies, lifetime=20.0):
        s = ChatServer(list(replies), lifetime=lifetime).start()
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    return KEY_ENV


def plan(srv, cache=None, **kw):
    args = dict(description="a person walking a dog past a bench", width=512, height=512, max_instances=10,
                base_url=srv.base_url if srv is not None else "http://127.0.0.1:9/v1", model="test-model",
                api_key_env=KEY_ENV, timeout=5.0, seed=7, cache=cache if cache is not None else PlanCache())
    args.update(kw)
    return plan_layout(**args)


def boxes(layout):
    return [tuple(i.bbox) for i in layout.instances]


# --------------------------------------------------------------------------------------------- requests

def test_good_reply_and_the_request_carries_model_seed_temperature_and_key(server, key):
    srv = server(Reply.content(GOOD))
    result = plan(srv)
    assert boxes(result.layout) == GOOD_CORNERS
    assert result.caption == "a park with a dog and a person" and result.source == "model"
    assert [i.category for i in result.layout.instances] == ["person", "dog", "bench"]
    (req,) = srv.requests
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {SECRET}"
    assert req.body["model"] == "test-model" and req.body["seed"] == 7 and req.body["temperature"] == 0.0
    assert req.body["response_format"] == {"type": "json_object"}
    user = req.body["messages"][-1]["content"]
    assert "a person walking a dog past a bench" in user and "512" in user and "10" in user
    system = req.body["messages"][0]["content"]
    assert "[x, y, w, h]" in system and "perspective" in system.lower() and "edge" in system
    assert SECRET not in result.report() and SECRET not in repr(result)


def test_no_key_variable_sends_no_authorization_header(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    srv = server(Reply.content(GOOD))
    plan(srv)
    assert "authorization" not in srv.requests[0].headers


def test_key_pasted_into_api_key_env_is_refused_without_echo(server):
    srv = server(Reply.content(GOOD))
    with pytest.raises(PlannerError, match="NAME of an environment variable") as e:
        plan(srv, api_key_env=SECRET)
    assert SECRET not in str(e.value) and srv.requests == []


# --------------------------------------------------------------------------------------------- reply shapes

def test_json_in_a_code_fence(server, key):
    srv = server(Reply.content(f"Here is your layout:\n```json\n{GOOD}\n```\nEnjoy!"))
    result = plan(srv)
    assert boxes(result.layout) == GOOD_CORNERS
    assert any("code fence" in r for r in result.repairs)


def test_json_inside_prose_without_fence(server, key):
    srv = server(Reply.content(f"Sure! {GOOD} Let me know if you want changes."))
    result = plan(srv)
    assert boxes(result.layout) == GOOD_CORNERS
    assert any("prose" in r for r in result.repairs)


def test_corner_boxes_are_detected_and_reported(server, key):
    corners = layout_json([
        {"caption": "a person", "bbox": [100, 150, 160, 350], "category_name": "person"},
        {"caption": "a bus", "bbox": [250, 100, 500, 340], "category_name": "bus"},
    ])
    result = plan(server(Reply.content(corners)))
    assert boxes(result.layout) == [(100, 150, 160, 350), (250, 100, 500, 340)]
    assert any(r.startswith("bbox format: xyxy") for r in result.repairs)


def test_forty_instances_are_capped_at_max_instances(server, key):
    many = layout_json([{"caption": f"a balloon number {i}", "bbox": [12 * i, 20, 10, 30],
                         "category_name": "balloon"} for i in range(40)])
    result = plan(server(Reply.content(many)), max_instances=MAX_INSTANCES)
    assert len(result.layout.instances) == MAX_INSTANCES
    assert [i.caption for i in result.layout.instances][-1] == "a balloon number 29"
    assert any("40" in r and "kept the first 30" in r for r in result.repairs)
    fewer = plan(server(Reply.content(many)), max_instances=5)
    assert len(fewer.layout.instances) == 5
    assert any("max_instances is 5" in r for r in fewer.repairs)


def test_invalid_json_raises_with_an_excerpt_of_the_reply(server, key):
    broken = '{"caption": "a park", "annos": [{"caption": "a dog", "bbox": [1, 2'
    with pytest.raises(PlanReplyError, match="no JSON layout") as e:
        plan(server(Reply.content(broken)))
    assert '"caption": "a dog"' in str(e.value)


def test_reply_that_is_not_json_at_all(server, key):
    refusal = "I'm sorry, but I can't help with drawing boxes today."
    with pytest.raises(PlanReplyError) as e:
        plan(server(Reply.content(refusal)))
    assert refusal in str(e.value)


def test_json_without_usable_objects_is_an_error_that_shows_the_reply(server, key):
    empty = layout_json([{"caption": "a dog", "bbox": [600, 600, 50, 50]}])      # entirely off the canvas
    with pytest.raises(PlanReplyError, match="no usable object") as e:
        plan(server(Reply.content(empty)))
    assert "[600, 600, 50, 50]" in str(e.value)


# --------------------------------------------------------------------------------------------- HTTP failures

def test_http_500_names_the_endpoint(server, key):
    srv = server(Reply.error(500, "model crashed"))
    with pytest.raises(PlannerError) as e:
        plan(srv)
    msg = str(e.value)
    assert f"{srv.base_url}/chat/completions" in msg and "HTTP 500" in msg and "model crashed" in msg


def test_http_401_explains_the_key_variable_and_never_shows_the_key(server, key):
    srv = server(Reply.error(401, f"invalid api key {SECRET}"))             # a server that echoes the key
    with pytest.raises(PlannerError) as e:
        plan(srv)
    msg = str(e.value)
    assert "HTTP 401" in msg and KEY_ENV in msg and SECRET not in msg and "***" in msg


def test_http_401_without_key_says_the_variable_is_not_set(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(PlannerError, match=f"{KEY_ENV} is not set"):
        plan(server(Reply.error(401, "missing key")))


def test_timeout_when_the_server_is_slower_than_the_client(server, key):
    srv = server(Reply.content(GOOD, delay=1.5))
    with pytest.raises(PlannerError, match="timeout") as e:
        plan(srv, timeout=0.3)
    assert srv.base_url in str(e.value)


def test_connection_refused_names_the_endpoint_and_the_fix(key):
    url = closed_port_url()
    with pytest.raises(PlannerError, match="connection refused") as e:
        plan(None, base_url=url)
    assert url in str(e.value) and "base_url" in str(e.value)


def test_html_page_instead_of_an_api(server, key):
    with pytest.raises(PlannerError, match="not a chat-completions endpoint"):
        plan(server(Reply.raw("<html>It works!</html>")))


def test_server_without_json_mode_is_asked_again_without_it(server, key):
    srv = server(Reply.error(400, "unknown field: response_format"), Reply.content(GOOD))
    result = plan(srv)
    assert boxes(result.layout) == GOOD_CORNERS
    assert "response_format" in srv.requests[0].body and "response_format" not in srv.requests[1].body


def test_bad_inputs_are_named_before_any_request(server, key):
    srv = server()
    for kw, field in ((dict(description="  "), "description"), (dict(max_instances=31), "max_instances"),
                      (dict(base_url="127.0.0.1:8080"), "base_url"), (dict(width=0), "width"),
                      (dict(timeout=0), "timeout"), (dict(temperature=3.0), "temperature")):
        with pytest.raises(PlannerError, match=field):
            plan(srv, **kw)
    assert srv.requests == []


# --------------------------------------------------------------------------------------------- cache

def test_cache_reuses_the_reply_until_an_input_changes(server, key):
    srv = server(*[Reply.content(GOOD)] * 7)
    cache = PlanCache()
    first = plan(srv, cache=cache)
    second = plan(srv, cache=cache)
    assert len(srv.requests) == 1 and second.source == "memory cache"
    assert boxes(second.layout) == boxes(first.layout) and second.cache_key == first.cache_key
    plan(srv, cache=cache, timeout=9.0, api_key_env="SOME_OTHER_VAR")      # not part of the answer
    assert len(srv.requests) == 1
    changes = [dict(seed=8), dict(description="a person walking a cat"), dict(model="other-model"),
               dict(max_instances=9), dict(width=640), dict(temperature=0.5)]
    for n, change in enumerate(changes, start=2):
        plan(srv, cache=cache, **change)
        assert len(srv.requests) == n, change


def test_disk_cache_survives_a_new_process_cache(server, key, tmp_path):
    srv = server(Reply.content(GOOD))
    plan(srv, cache=PlanCache(), cache_dir=tmp_path)
    files = list(tmp_path.glob("plan-*.json"))
    assert len(files) == 1 and SECRET not in files[0].read_text()
    again = plan(srv, cache=PlanCache(), cache_dir=tmp_path)               # a fresh memory cache
    assert again.source == "disk cache" and len(srv.requests) == 1
    assert boxes(again.layout) == GOOD_CORNERS


def test_failed_replies_are_not_cached(server, key):
    srv = server(Reply.content("no layout here"), Reply.content(GOOD))
    cache = PlanCache()
    with pytest.raises(PlanReplyError):
        plan(srv, cache=cache)
    assert boxes(plan(srv, cache=cache).layout) == GOOD_CORNERS
    assert len(srv.requests) == 2


def test_cache_key_covers_each_input():
    base = PlanRequest("a dog", 512, 512, 10, "http://127.0.0.1:8080/v1", "m", 1, 0.0)
    assert base.cache_key() == PlanRequest("a dog", 512, 512, 10, "http://127.0.0.1:8080/v1/", "m", 1,
                                           0.0).cache_key()
    keys = {PlanRequest(*args).cache_key() for args in (
        ("a cat", 512, 512, 10, "http://127.0.0.1:8080/v1", "m", 1, 0.0),
        ("a dog", 640, 512, 10, "http://127.0.0.1:8080/v1", "m", 1, 0.0),
        ("a dog", 512, 640, 10, "http://127.0.0.1:8080/v1", "m", 1, 0.0),
        ("a dog", 512, 512, 11, "http://127.0.0.1:8080/v1", "m", 1, 0.0),
        ("a dog", 512, 512, 10, "http://127.0.0.1:8081/v1", "m", 1, 0.0),
        ("a dog", 512, 512, 10, "http://127.0.0.1:8080/v1", "n", 1, 0.0),
        ("a dog", 512, 512, 10, "http://127.0.0.1:8080/v1", "m", 2, 0.0),
        ("a dog", 512, 512, 10, "http://127.0.0.1:8080/v1", "m", 1, 0.1))}
    assert len(keys) == 8 and base.cache_key() not in keys


# --------------------------------------------------------------------------------------------- repairs (no HTTP)

REQ = PlanRequest("a cat on a sofa", 512, 512, 10)


def test_repairs_clip_drop_fill_and_rescale_are_each_reported():
    reply = json.dumps({"width": 512, "height": 512, "annos": [
        {"caption": "a sofa", "bbox": [300, 250, 300, 200], "category_name": "sofa"},      # over the right edge
        {"caption": "a cushion", "bbox": [50, 50, 0, 40]},                                  # no width: degenerate
        {"category_name": "cat", "bbox": [320, 200, 80, 60]},                               # caption missing
        {"caption": "a lamp", "point": [700, 10], "bbox": [20, 20, 40, 100]},              # point off canvas
    ]})
    layout, caption, repairs = parse_layout_reply(reply, REQ)
    assert caption == "a cat on a sofa"
    assert boxes(layout) == [(300, 250, 512, 450), (320, 200, 400, 260)]
    assert [i.caption for i in layout.instances] == ["a sofa", "cat"]
    text = "\n".join(repairs)
    assert "no global caption; used the description" in text
    assert "annos[0]" in text and "clipped" in text
    assert "annos[1]" in text and "no area" in text
    assert "annos[2]: no caption; used 'cat'" in text
    assert "annos[3]" in text and "point" in text and "dropped" in text


def test_other_canvas_is_scaled_to_the_requested_one():
    reply = json.dumps({"caption": "x", "width": 1024, "height": 1024,
                        "annos": [{"caption": "a cat", "bbox": [200, 400, 200, 200]}]})
    layout, _, repairs = parse_layout_reply(reply, REQ)
    assert (layout.width, layout.height) == (512, 512)
    assert boxes(layout) == [(100, 200, 200, 300)]
    assert any("1024x1024" in r for r in repairs)


def test_bare_list_other_keys_think_block_and_trailing_commas():
    reply = ('<think>they want a cat</think>\n[{"label": "a cat", "box": [10, 10, 100, 100],},]')
    layout, caption, repairs = parse_layout_reply(reply, REQ)
    assert boxes(layout) == [(10, 10, 110, 110)] and caption == "a cat on a sofa"
    text = "\n".join(repairs)
    for note in ("<think>", "trailing commas", "bare list", "'box'", "used 'a cat'"):
        assert note in text


def test_extract_json_prefers_the_layout_object_in_prose():
    value, notes = extract_json('Options: {"note": 1} and the layout {"annos": [], "caption": "c"} done')
    assert value == {"annos": [], "caption": "c"} and notes


def test_build_messages_states_the_limits():
    msgs = build_messages(PlanRequest("a red car", 768, 512, 4))
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "768" in msgs[1]["content"] and "512" in msgs[1]["content"] and "4" in msgs[1]["content"]


# --------------------------------------------------------------------------------------------- ComfyUI nodes

@pytest.fixture(scope="module")
def node_module():
    """nodes/planner.py imported as part of a stand-in package (the pack's root and nodes/__init__.py import
    ComfyUI; this module only needs its relative imports)."""
    return pack_module("planner", "_instdiff_pack_for_planner_tests")


def node_inputs(srv, **kw):
    inputs = dict(description="a person walking a dog past a bench", width=512, height=512, max_instances=10,
                  base_url=srv.base_url, model="test-model", api_key_env=KEY_ENV, timeout=5.0, seed=3,
                  temperature=0.0, cache_to_disk=False)
    inputs.update(kw)
    return inputs


def test_node_definitions_have_tooltips_category_and_registration(node_module):
    for key, (cls, display) in node_module.NODES.items():
        assert cls.CATEGORY == "instance_diffusion/layout" and cls.DESCRIPTION and display
        spec = cls.INPUT_TYPES()
        for section in spec.values():
            for name, (kind, *opts) in section.items():
                assert opts and opts[0].get("tooltip"), f"{key}.{name} has no tooltip"
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
    planner = node_module.LayoutPlanner
    assert planner.RETURN_TYPES == ("INSTANCE_LAYOUT", "STRING", "STRING")
    required = planner.INPUT_TYPES()["required"]
    assert required["base_url"][1]["default"] == "http://127.0.0.1:8080/v1"
    assert required["api_key_env"][1]["default"] == "OPENAI_API_KEY"
    assert required["seed"][1]["control_after_generate"] is False      # no 'randomize' widget: keep the cache


def test_planner_node_is_changed_follows_the_cache_key(node_module, server):
    srv = server()
    node = node_module.LayoutPlanner
    same = node.IS_CHANGED(**node_inputs(srv))
    assert same == node.IS_CHANGED(**node_inputs(srv, timeout=60.0))
    assert same != node.IS_CHANGED(**node_inputs(srv, seed=4))
    assert same != node.IS_CHANGED(**node_inputs(srv, description="a cat"))
    bad = node.IS_CHANGED(**node_inputs(srv, base_url="nonsense"))
    assert bad != bad                                  # NaN: always re-run so the error shows


def test_planner_node_plans_reports_and_layout_check_passes_through(node_module, server, key):
    srv = server(Reply.content(GOOD))
    out = node_module.LayoutPlanner().plan(**node_inputs(srv, seed=11))
    layout, caption, report = out["result"]
    assert all(SECRET not in w for w in out["ui"]["instdiff_warnings"])
    assert boxes(layout) == GOOD_CORNERS and caption == "a park with a dog and a person"
    assert "planned 3 instances" in report and "layout check:" in report and SECRET not in report
    again = node_module.LayoutPlanner().plan(**node_inputs(srv, seed=11))["result"]
    assert len(srv.requests) == 1 and "memory cache" in again[2]
    text, passed = node_module.LayoutCheck().check(layout)["result"]
    assert passed is layout and text.startswith("layout check:")
    # a 12 px box: too small at 512, fine once generated at 1024
    instance_type = type(layout.instances[0])             # the stand-in package's own Instance class
    tiny = layout.with_instance(instance_type(caption="a bird", bbox=(20, 20, 32, 60)))
    assert "too_small" in node_module.LayoutCheck().check(tiny)["result"][0]
    assert "too_small" not in node_module.LayoutCheck().check(tiny, 1024, 1024)["result"][0]
    shown = node_module.LayoutCheck().check(tiny)["ui"]["instdiff_warnings"]    # also on the node, unwired
    assert any(w.startswith("[too_small] instance 3") for w in shown), shown
    assert not any("too_small" in w for w in node_module.LayoutCheck().check(tiny, 1024, 1024)["ui"]["instdiff_warnings"])
