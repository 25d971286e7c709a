"""The layout planner against hostile servers and replies (issue #16): the key never leaves its host or shows in a
message, the call has a total deadline and a size limit, and parsing and repair are linear in the reply's size.

Every server is ``instdiff_testkit.chat_server.ChatServer`` on 127.0.0.1; a second instance on another port plays
"another host". Timing is only compared as a ratio of two sizes measured in one run.
"""
from __future__ import annotations

import json
import time
import tracemalloc

import pytest

from instdiff_testkit.timing import per_call_seconds

from instdiff_testkit.chat_server import ChatServer, Reply
from instancediffusion_core.planner import plan as plan_module
from instancediffusion_core.planner.plan import (PlanCache, PlannerError, PlanReplyError, PlanRequest,
                                                 parse_layout_reply, plan_layout)

KEY_ENV = "INSTDIFF_TEST_HOSTILE_KEY"
SECRET = "sk-hostile-7Qx2-do-not-leak-this-key"
REQ = PlanRequest("a cat on a sofa", 512, 512, 10)
GOOD = json.dumps({"caption": "a cat on a sofa", "width": 512, "height": 512,
                   "annos": [{"caption": "a cat", "bbox": [100, 200, 120, 90]},
                             {"caption": "a sofa", "bbox": [40, 250, 400, 200]}]})


@pytest.fixture
def server():
    servers = []

    def start(*replies):
        s = ChatServer(list(replies), lifetime=40.0).start()
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)


def plan(srv, **kw):
    args = dict(description="a cat on a sofa", width=512, height=512, max_instances=10, base_url=srv.base_url,
                model="m", api_key_env=KEY_ENV, timeout=5.0, seed=1, cache=PlanCache())
    args.update(kw)
    return plan_layout(**args)


def assert_no_key(text: str):
    assert SECRET not in text
    for i in range(0, len(SECRET) - 8):                     # not even a piece of it (an excerpt cut it in two)
        assert SECRET[i:i + 9] not in text, SECRET[i:i + 9]




# ------------------------------------------------------------------------------------------------ the API key

@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_host_never_receives_the_key(server, status):
    other = server(Reply.content(GOOD), Reply.content(GOOD))            # another port: another host
    srv = server(Reply.redirect(f"{other.base_url}/chat/completions", status))
    with pytest.raises(PlannerError, match=rf"HTTP {status} redirect to .*redirects are not followed") as e:
        plan(srv)
    assert other.requests == [], [r.headers for r in other.requests]
    assert srv.requests[0].headers["authorization"] == f"Bearer {SECRET}"   # sent to base_url only
    assert_no_key(str(e.value))


def test_a_redirect_location_echoing_the_key_is_scrubbed(server):
    srv = server(Reply.redirect(f"http://127.0.0.1:9/steal?k={SECRET}"))
    with pytest.raises(PlannerError, match="redirect") as e:
        plan(srv)
    assert_no_key(str(e.value))


@pytest.mark.parametrize("body, content_type", ids=["json", "html", "straddling", "escaped"], argvalues=[
    (json.dumps({"object": "list", "echo": f"Bearer {SECRET}"}), "application/json"),
    ("<html>your key " + SECRET + " is fine</html>", "text/html"),
    ("x" * 140 + SECRET + "y" * 2000, "text/plain"),                   # the key straddles the excerpt's cut
    ('{"object": "x", "echo": "\\u0073' + SECRET[1:] + '"}', "application/json"),   # hidden by an escape
])
def test_a_200_reply_that_is_not_a_chat_completion_never_shows_the_key(server, body, content_type):
    with pytest.raises(PlannerError) as e:
        plan(server(Reply.raw(body, content_type=content_type)))
    assert_no_key(str(e.value))


def test_an_error_body_hiding_the_key_in_escapes_is_scrubbed(server):
    body = '{"error": {"message": "bad key \\u0073' + SECRET[1:] + '"}}'
    with pytest.raises(PlannerError, match="HTTP 401") as e:
        plan(server(Reply(401, body)))
    assert_no_key(str(e.value))


def test_the_model_echoing_the_key_in_its_layout_is_scrubbed(server):
    reply = json.dumps({"caption": f"key {SECRET}", "annos": [{"caption": f"a cat {SECRET}",
                                                               "bbox": [10, 10, 50, 50]}]})
    result = plan(server(Reply.content(reply)))
    assert_no_key(result.reply + result.caption + result.report() + repr(result.layout))


# ------------------------------------------------------------------------------------------------ deadline and size

def test_a_trickling_body_is_cut_at_the_total_deadline(server):
    """The body arrives a byte every 20 ms (about 14 s); each read returns within the socket timeout, so only a
    deadline for the whole call stops it."""
    srv = server(Reply.trickle(GOOD, interval=0.02))
    with pytest.raises(PlannerError, match=r"no complete reply within 1 s \(timeout; it bounds the whole"):
        plan(srv, timeout=1.0)
    total = len(Reply.content(GOOD).body)
    time.sleep(0.1)
    assert 0 < srv.requests[0].sent < total / 2, (srv.requests[0].sent, total)


def test_a_100_mb_reply_is_refused_from_its_length(server):
    srv = server(Reply.large("x" * 65536, repeat=1600))                 # 100 MiB announced
    tracemalloc.start()
    try:
        with pytest.raises(PlannerError, match=r"104,857,600 bytes, more than the 2,097,152-byte limit "
                                               r"\(MAX_REPLY_BYTES"):
            plan(srv)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_a_reply_without_length_is_cut_at_the_limit(server):
    srv = server(Reply.large("x" * 65536, repeat=1600, send_length=False))
    tracemalloc.start()
    try:
        with pytest.raises(PlannerError, match=r"larger than the 2,097,152-byte limit \(MAX_REPLY_BYTES.*stopped"):
            plan(srv)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 24 << 20
    time.sleep(0.1)
    assert srv.requests[0].sent < 50 << 20


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), -1.0])
def test_non_finite_timeouts_are_refused_before_any_request(server, timeout):
    srv = server(Reply.content(GOOD))
    with pytest.raises(PlannerError, match="timeout: .* positive, finite number of seconds"):
        plan(srv, timeout=timeout)
    assert srv.requests == []


@pytest.mark.parametrize("field, value", [("width", 16384), ("height", 8192), ("temperature", float("nan")),
                                          ("seed", 2 ** 80)])
def test_out_of_range_inputs_are_named_before_any_request(server, field, value):
    srv = server(Reply.content(GOOD))
    with pytest.raises(PlannerError, match=field):
        plan(srv, **{field: value})
    assert srv.requests == []


# ------------------------------------------------------------------------------------------------ linear parsing

def test_think_tags_without_end_are_parsed_in_linear_time():
    """An 84 KB reply of unclosed <think> tags took 17.5 s: the regex rescanned to the end for every tag."""
    def reply(n):
        return "<THINK>" * n + GOOD

    small, big = reply(600), reply(4800)                # ~4 KB and ~34 KB
    layout, _, repairs = parse_layout_reply(big, REQ)
    assert len(layout.instances) == 2
    ratio = per_call_seconds(lambda: parse_layout_reply(big, REQ)) / \
        per_call_seconds(lambda: parse_layout_reply(small, REQ))
    assert ratio < 24, f"8x the reply took {ratio:.1f}x as long (quadratic: 64x)"


def test_think_blocks_are_still_removed():
    layout, _, repairs = parse_layout_reply("<think>plan: {\"annos\": []}</think>" + GOOD, REQ)
    assert len(layout.instances) == 2 and "removed the model's <think> block" in repairs


def test_the_repair_pass_validates_each_object_once():
    """2000 rejected objects took 114 s: the loader was re-run after every dropped one."""
    def reply(n):
        bad = [{"caption": f"ghost {i}", "point": [9000, 9000]} for i in range(n)]
        return json.dumps({"caption": "c", "annos": bad + [{"caption": "a cat", "bbox": [10, 10, 100, 100]}]})

    small, big = reply(50), reply(400)
    layout, _, repairs = parse_layout_reply(big, REQ)
    assert len(layout.instances) == 1
    dropped = [r for r in repairs if "loader rejected" in r]
    assert len(dropped) == plan_module.MAX_REPAIR_NOTES + 1 and "380 more objects" in dropped[-1]
    assert "annos[0] ('ghost 0') point: (9000.0, 9000.0) lies outside the 512x512 canvas" in "\n".join(repairs)
    ratio = per_call_seconds(lambda: parse_layout_reply(big, REQ)) / \
        per_call_seconds(lambda: parse_layout_reply(small, REQ))
    assert ratio < 24, f"8x the objects took {ratio:.1f}x as long (quadratic: 64x)"


def test_dropped_objects_are_named_by_their_position_in_the_reply():
    reply = json.dumps({"annos": ["not an object", {"caption": "a lamp", "point": [700, 10]},
                                  {"caption": "a cat", "bbox": [10, 10, 100, 100]}]})
    _, _, repairs = parse_layout_reply(reply, REQ)
    text = "\n".join(repairs)
    assert "annos[0]: 'not an object' is not an object" in text
    assert "dropped an object the loader rejected: layout: annos[1] ('a lamp') point" in text


@pytest.mark.parametrize("reply", ["[" * 5000, "{\"annos\": " + "[" * 3000 + "]" * 3000 + "}",
                                   "Sure! " + "[" * 5000 + " done"])
def test_json_nested_too_deep_is_a_reply_error(reply):
    with pytest.raises(PlanReplyError):
        parse_layout_reply(reply, REQ)


@pytest.mark.parametrize("number", ["1" * 400, "9" * 5000])
def test_huge_integers_in_a_reply_are_named_not_raised(number):
    reply = ('{"caption": "c", "annos": [{"caption": "a cat", "bbox": [' + number + ', 0, 10, 10]}, '
             '{"caption": "a dog", "bbox": [10, 10, 100, 100]}]}')
    layout, _, repairs = parse_layout_reply(reply, REQ)
    assert [i.caption for i in layout.instances] == ["a dog"]
    assert any("annos[0] bbox" in r and "not a finite number" in r for r in repairs)
    width = '{"width": ' + number + ', "annos": [{"caption": "a cat", "bbox": [10, 10, 100, 100]}]}'
    layout, _, repairs = parse_layout_reply(width, REQ)
    assert layout.width == 512 and any("is not a size" in r for r in repairs)


def test_backticks_and_brackets_in_prose_stay_linear():
    def reply(n):
        return ("`" * 7 + " [x, {\"y\": \"" + "'" * 5) * n + GOOD

    small, big = reply(200), reply(1600)
    layout, _, _ = parse_layout_reply(big, REQ)
    assert len(layout.instances) == 2
    ratio = per_call_seconds(lambda: parse_layout_reply(big, REQ)) / \
        per_call_seconds(lambda: parse_layout_reply(small, REQ))
    assert ratio < 24, f"8x the reply took {ratio:.1f}x as long"
