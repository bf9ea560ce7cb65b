"""IVR flows as data: the TOML format, validation messages (key path and line), the default flow."""

from __future__ import annotations

import dataclasses
import re
from importlib import resources

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.flow import (MAX_NODES, NODE_TYPES, SECONDS_PER_CHAR, Flow, FlowError, MenuNode, PlayNode, QueueNode,
                      format_path, key_lines, menu_depth, no_key_seconds, parse_flow, speaking_seconds)

pytestmark = pytest.mark.ivr

QUEUES = {"hotline-general", "hotline-business", "hotline-dialect", "hotline-leader"}
DEFAULT_TEXT = resources.files("ivr").joinpath("flows/default.toml").read_text(encoding="utf-8")

# One flow with every node type, used here and by the engine's tests.
EVERY_NODE_TYPE = """\
[flow]
name = "every-node"
description = "每种节点各一个"
start = "lists"
fallback_queue = "hotline-general"

[prompts.greet]
text = "您好，12345热线。"
audio = "t/greet"
[prompts.menu]
text = "请按键选择。"
audio = "t/menu"
[prompts.invalid]
text = "按键无效。"
audio = "t/invalid"
[prompts.typhoon]
text = "台风预警期间，请注意安全。"
audio = "t/typhoon"
[prompts.lang]
text = "粤语请按1，闽南语请按2。"
audio = "t/lang"
[prompts.leader]
text = "正在为您接通领导接线。"
audio = "t/leader"
[prompts.queued]
text = "正在为您转接。"
audio = "t/queued"
[prompts.closed]
text = "现在是非工作时间。"
audio = "t/closed"
[prompts.order_ask]
text = "请输入工单号。"
audio = "t/order-ask"
[prompts.order_closed]
text = "您的工单已办结。"
audio = "t/order-closed"
[prompts.order_handling]
text = "您的工单正在办理。"
audio = "t/order-handling"
[prompts.order_not_found]
text = "未查询到该工单。"
audio = "t/order-not-found"
[prompts.order_unavailable]
text = "暂时无法查询。"
audio = "t/order-unavailable"
[prompts.wait]
text = "当前排队较长，需要回电请按1。"
audio = "t/wait"
[prompts.callback_ok]
text = "我们将尽快给您回电。"
audio = "t/callback-ok"
[prompts.emergency]
text = "如有紧急危险，转接110请按1。"
audio = "t/emergency"
[prompts.bye]
text = "再见。"
audio = "t/bye"

[nodes.lists]
type = "caller_list"
lists = { elderly = 3, disabled = 3, vip = 2 }
routes = { disabled = "general" }
next = "typhoon"

[nodes.typhoon]
type = "topic"
topic = "typhoon"
prompts = ["typhoon"]
next = "greet"

[nodes.greet]
type = "play"
prompts = ["greet"]
barge_in = true
next = "menu"

[nodes.menu]
type = "menu"
prompt = "menu"
timeout_ms = 3000
retries = 1
invalid_prompt = "invalid"
on_timeout = "general"
on_invalid = "general"
keys = { "1" = "general", "2" = "business_hours", "3" = "dialect", "4" = "leader", "5" = "order", "6" = "callback", "0" = "emergency", "8" = "bye" }

[nodes.business_hours]
type = "hours"
calendar = "business"
open = "business"
closed = "general"
closed_prompt = "closed"

[nodes.business]
type = "queue"
queue = "hotline-business"
priority = 1
announce = "queued"

[nodes.dialect]
type = "language"
prompt = "lang"
timeout_ms = 3000
retries = 0
on_timeout = "general"

[nodes.dialect.choices]
"1" = { language = "yue", next = "dialect_queue" }
"2" = { language = "nan", next = "dialect_queue" }

[nodes.dialect_queue]
type = "queue"
queue = "hotline-dialect"

[nodes.leader]
type = "leader"
queue = "hotline-leader"
priority = 5
announce = "leader"
fallback = "general"

[nodes.order]
type = "order_status"
prompt = "order_ask"
max_digits = 14
retries = 1
not_found = "order_not_found"
unavailable = "order_unavailable"
next = "bye"
status_prompts = { closed = "order_closed", handling = "order_handling" }

[nodes.callback]
type = "callback_offer"
queue = "hotline-general"
threshold_seconds = 60
prompt = "wait"
accepted_prompt = "callback_ok"
next = "general"

[nodes.emergency]
type = "emergency"
prompt = "emergency"
confirm_key = "1"
on_decline = "general"

[nodes.bye]
type = "hangup"
prompt = "bye"

[nodes.general]
type = "queue"
queue = "hotline-general"
"""


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based number of the line holding the nth occurrence of ``needle``."""
    count = 0
    for number, line in enumerate(text.split("\n"), 1):
        if needle in line:
            count += 1
            if count == nth:
                return number
    raise AssertionError(f"{needle!r} not in the text")


def errors_of(text: str, known_queues=QUEUES) -> list[str]:
    with pytest.raises(FlowError) as caught:
        parse_flow(text, known_queues)
    assert caught.value.messages, "a FlowError always says why"
    assert str(caught.value).startswith("invalid IVR flow:")
    return caught.value.messages


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


# --------------------------------------------------------------------------- the default flow

def test_default_flow_is_valid_with_no_warnings():
    flow = parse_flow(DEFAULT_TEXT, QUEUES)
    assert flow.name == "default" and flow.start == "welcome" and flow.fallback_queue == "hotline-general"
    assert flow.warnings == ()
    assert flow.queues() == {"hotline-general", "hotline-business", "hotline-dialect"}


def test_default_flow_menu_keys_and_no_key_route():
    flow = parse_flow(DEFAULT_TEXT, QUEUES)
    welcome = flow.nodes[flow.start]
    assert isinstance(welcome, PlayNode) and welcome.barge_in
    menu = flow.nodes[welcome.next]
    assert isinstance(menu, MenuNode)
    targets = {key: flow.nodes[node] for key, node in menu.keys.items()}
    assert set(targets) == {"0", "1", "2", "3", "9"}
    assert targets["1"].queue == "hotline-general"
    assert targets["2"].queue == "hotline-business"
    assert targets["3"].queue == "hotline-dialect" and targets["3"].language
    assert targets["0"].type == "emergency" and targets["0"].target == "110"
    assert (targets["0"].confirm_key, targets["0"].on_decline) == ("1", "general")   # a misdialled 0 never reaches 110
    assert targets["9"].type == "order_status"
    assert flow.nodes[menu.on_timeout].queue == "hotline-general"


def test_default_flow_reaches_the_general_queue_within_10_s_and_has_one_menu_level():
    flow = parse_flow(DEFAULT_TEXT, QUEUES)
    # Walk the no-key path by hand: prompts at 0.25 s per spoken character, each menu's timeout
    # on each try.
    seconds, node_id, menus = 0.0, flow.start, 0
    while True:
        node = flow.nodes[node_id]
        if isinstance(node, PlayNode):
            seconds += sum(0.25 * sum(c.isalnum() for c in flow.prompts[p].text) for p in node.prompts)
            node_id = node.next
        elif isinstance(node, MenuNode):
            menus += 1
            said = 0.25 * sum(c.isalnum() for c in flow.prompts[node.prompt].text)
            seconds += (1 + node.retries) * (said + node.timeout_ms / 1000)
            node_id = node.on_timeout
        else:
            break
    assert isinstance(node, QueueNode) and node.queue == "hotline-general" and node.announce is None
    assert seconds <= 10.0, f"a caller who presses nothing waits {seconds} s"
    assert seconds == no_key_seconds(flow) == 9.75
    assert menus == menu_depth(flow) == 1


def test_default_flow_prompts_have_chinese_text_and_sound_names():
    flow = parse_flow(DEFAULT_TEXT, QUEUES)
    listed = flow.prompt_list()
    assert [name for name, _, _ in listed] == list(flow.prompts)
    for name, text, audio in listed:
        assert re.search(r"[\u4e00-\u9fff]", text), name
        assert re.fullmatch(r"hotline/[a-z0-9-]+", audio), audio
    assert len({audio for _, _, audio in listed}) == len(listed)


def test_speaking_time_counts_spoken_characters_only():
    assert speaking_seconds("您好，12345热线。") == 9 * SECONDS_PER_CHAR
    assert speaking_seconds("，。 ") == 0


# --------------------------------------------------------------------------- the model

def test_every_node_type_parses():
    flow = parse_flow(EVERY_NODE_TYPE, QUEUES)
    assert {node.type for node in flow.nodes.values()} == set(NODE_TYPES)
    # two look-ups (2 s each at worst), the typhoon notice, greeting and two tries of the menu
    assert flow.warnings == ("line 4: flow.start: a caller who presses nothing may wait about 17.5 s before "
                             "the flow ends (over 15 s)",)
    assert menu_depth(flow) == 2      # menu, then the dialect choice
    assert flow.nodes["dialect"].choices["2"].language == "nan"
    assert flow.nodes["lists"].lists == {"elderly": 3, "disabled": 3, "vip": 2}


def test_flow_is_read_only():
    flow = parse_flow(EVERY_NODE_TYPE, QUEUES)
    with pytest.raises(dataclasses.FrozenInstanceError):
        flow.start = "menu"  # type: ignore[misc]
    with pytest.raises(TypeError):
        flow.nodes["x"] = flow.nodes["bye"]  # type: ignore[index]
    with pytest.raises(TypeError):
        flow.nodes["menu"].keys["7"] = "bye"  # type: ignore[index]
    with pytest.raises(Exception):
        flow.nodes["menu"].timeout_ms = 1  # type: ignore[misc]
    assert flow.nodes["menu"].model_dump()["keys"]["1"] == "general"   # still dumps as a table


def test_known_queues_are_optional():
    text = replace_once(DEFAULT_TEXT, 'queue = "hotline-dialect"', 'queue = "hotline-cantonese"')
    assert parse_flow(text).nodes["dialect"].queue == "hotline-cantonese"
    (message,) = errors_of(text)
    assert message == (f"line {line_of(text, 'hotline-cantonese')}: nodes.dialect.queue: names unknown queue "
                       f"'hotline-cantonese'; known queues: hotline-business, hotline-dialect, hotline-general, "
                       f"hotline-leader")


def test_unreachable_nodes_and_unused_prompts_are_warnings():
    text = DEFAULT_TEXT + '\n[prompts.spare]\ntext = "备用"\naudio = "hotline/spare"\n' \
                          '\n[nodes.typhoon]\ntype = "topic"\ntopic = "typhoon"\nprompts = ["spare"]\n' \
                          'next = "general"\n'
    flow = parse_flow(text, QUEUES)
    assert flow.warnings == (
        f"line {line_of(text, '[prompts.spare]')}: prompts.spare: no reachable node plays this prompt",
        f"line {line_of(text, '[nodes.typhoon]')}: nodes.typhoon: no caller reaches this node from flow.start "
        f"'welcome' (kept, but unused)",
    )


def test_a_long_no_key_path_is_a_warning():
    text = replace_once(DEFAULT_TEXT, "retries = 0 ", "retries = 3 ")
    flow = parse_flow(text, QUEUES)
    assert no_key_seconds(flow) == 2.25 + 4 * 7.5
    (warning,) = flow.warnings
    assert warning.startswith(f"line {line_of(text, 'start = ')}: flow.start: a caller who presses nothing may wait "
                              f"about 32.2 s")


# --------------------------------------------------------------------------- invalid flows

MENU_KEY_9 = '"9" = "order_progress"'

INVALID = [
    # (name, old, new, path, message start, line needle)
    ("unknown node", MENU_KEY_9, '"9" = "order_progres"', 'nodes.main_menu.keys."9"',
     "names unknown node 'order_progres' (did you mean 'order_progress'?); define it as [nodes.order_progres]",
     '"9" ='),
    ("unknown prompt", 'prompt = "goodbye"', 'prompt = "good_bye"', "nodes.goodbye.prompt",
     "names unknown prompt 'good_bye' (did you mean 'goodbye'?)", '"good_bye"'),
    ("not a DTMF key", MENU_KEY_9, '"A" = "order_progress"', "nodes.main_menu.keys.A",
     "'A' is not a key (one of 0-9 * #)", '"A" ='),
    ("two keys", MENU_KEY_9, '"99" = "order_progress"', 'nodes.main_menu.keys."99"',
     "'99' is not a key", '"99" ='),
    ("timeout too long", "timeout_ms = 1500", "timeout_ms = 60000", "nodes.main_menu.timeout_ms",
     "input should be less than or equal to 15000 (got 60000)", "timeout_ms = 60000"),
    ("retries as text", "retries = 0 ", 'retries = "0" ', "nodes.main_menu.retries",
     'input should be a valid integer (got "0")', 'retries = "0"'),
    ("misspelt key", "timeout_ms = 1500", "timeout = 1500", "nodes.main_menu.timeout",
     "unknown key (did you mean 'timeout_ms'?; allowed: type, prompt, keys, timeout_ms, retries, invalid_prompt, "
     "on_timeout, on_invalid)", "timeout = 1500"),
    ("missing key", 'on_timeout = "general"\n', "", "nodes.main_menu.on_timeout",
     "missing: this key is required", "[nodes.main_menu]"),
    ("unknown type", 'type = "hangup"', 'type = "hang_up"', "nodes.goodbye",
     'type = "hang_up" is not a node type (one of: play, menu, language, queue, leader, topic, emergency, '
     'order_status, callback_offer, hours, caller_list, hangup)', "[nodes.goodbye]"),
    ("missing type", 'type = "hangup"\n', "", "nodes.goodbye", 'missing: type = "..."', "[nodes.goodbye]"),
    ("unknown start", 'start = "welcome"', 'start = "hello"', "flow.start", "names unknown node 'hello'",
     'start = "hello"'),
    ("queue name", 'queue = "hotline-business"', 'queue = "hotline business"', "nodes.business.queue",
     "'hotline business' is not a queue name (letters, digits, '_' and '-')", '"hotline business"'),
    ("reserved queue", 'queue = "hotline-business"', 'queue = "General"', "nodes.business.queue",
     "'general' is reserved in queues.conf", '"General"'),
    ("unknown queue, other case", 'queue = "hotline-business"', 'queue = "Hotline-Business"', "nodes.business.queue",
     "names unknown queue 'Hotline-Business' (did you mean 'hotline-business'?)", '"Hotline-Business"'),
    ("fallback queue", 'fallback_queue = "hotline-general"', 'fallback_queue = "hotline-genral"',
     "flow.fallback_queue", "names unknown queue 'hotline-genral' (did you mean 'hotline-general'?)",
     "fallback_queue"),
    ("priority", 'queue = "hotline-business"', 'queue = "hotline-business"\npriority = 11', "nodes.business.priority",
     "input should be less than or equal to 10 (got 11)", "priority = 11"),
    ("sound name with a blank", 'audio = "hotline/goodbye"', 'audio = "hotline/good bye"', "prompts.goodbye.audio",
     "'hotline/good bye' is not a sound name: one word", '"hotline/good bye"'),
    ("sound name going up", 'audio = "hotline/goodbye"', 'audio = "../goodbye"', "prompts.goodbye.audio",
     "'../goodbye': a sound name is relative to the sounds directory", '"../goodbye"'),
    ("sound name with extension", 'audio = "hotline/goodbye"', 'audio = "hotline/goodbye.wav"',
     "prompts.goodbye.audio", "'hotline/goodbye.wav': give the sound name without its extension ('hotline/goodbye')",
     "goodbye.wav"),
    ("empty text", 'text = "感谢您的来电，再见。"', 'text = "  "', "prompts.goodbye.text", "the text is empty",
     'text = "  "'),
    ("control character", 'text = "感谢您的来电，再见。"', 'text = "再见\\u0007"', "prompts.goodbye.text",
     "the text holds a control or invisible character U+0007", 'text = "再见'),
    ("flow name", 'name = "default"', 'name = "Default Flow"', "flow.name",
     "'Default Flow' is not a flow name of lowercase letters", 'name = "Default Flow"'),
    ("node id", "[nodes.goodbye]", '[nodes."good bye"]', 'nodes."good bye"', "'good bye' is not a node id",
     '[nodes."good bye"]'),
    ("language code", 'language = "yue"', 'language = "Cantonese"', "nodes.dialect.language",
     "'Cantonese' is not a language code such as yue, nan or zh-wuu", 'language = "Cantonese"'),
    ("transfer target", 'target = "110"', 'target = "999"', "nodes.emergency.target",
     "'999' is not a transfer target (one of 110)", 'target = "999"'),
    ("confirm without decline", 'on_decline = "general"         # no key', '# no key', "nodes.emergency.on_decline",
     "missing: with confirm_key, on_decline says where", "[nodes.emergency]"),
    ("decline without confirm", 'confirm_key = "1"              # 0 is', '# 0 is',
     "nodes.emergency.on_decline",
     "only with confirm_key", "on_decline ="),
    ("barge-in before a queue", 'next = "main_menu"', 'next = "general"', "nodes.welcome.barge_in",
     "a barge-in play hands the key pressed to the next node, so next must be a menu or language node "
     "('general' is a queue node)", "barge_in = true"),
    ("order digits", "max_digits = 14", "max_digits = 40", "nodes.order_progress.max_digits",
     "input should be less than or equal to 20 (got 40)", "max_digits = 40"),
    ("status name", "signed = ", "Signed = ", 'nodes.order_progress.status_prompts.Signed',
     "'Signed' is not a status name", "Signed ="),
    ("a node that is not a table", "[nodes.goodbye]\ntype = \"hangup\"\nprompt = \"goodbye\"\n",
     "[nodes]\ngoodbye = \"hangup\"\n", "nodes.goodbye", "must be a table, not a string", 'goodbye = "hangup"'),
    ("unknown section", "[flow]", "[menu]\nx = 1\n\n[flow]", "menu",
     "unknown section (a flow has [flow], [prompts.<name>] and [nodes.<id>])", "[menu]"),
]


@pytest.mark.parametrize("name, old, new, path, message, needle", INVALID, ids=[case[0] for case in INVALID])
def test_invalid_flow_message_names_key_path_and_line(name, old, new, path, message, needle):
    text = replace_once(DEFAULT_TEXT, old, new)
    messages = errors_of(text)
    wanted = f"line {line_of(text, needle)}: {path}: {message}"
    assert any(m.startswith(wanted) for m in messages), "\n".join(messages)


def test_a_loop_is_rejected_with_its_nodes():
    text = replace_once(DEFAULT_TEXT, 'on_timeout = "general"', 'on_timeout = "welcome"')
    (message,) = errors_of(text)
    assert message == (f"line {line_of(text, 'on_timeout = ')}: nodes.main_menu.on_timeout: closes a loop "
                       f"welcome -> main_menu -> welcome; a flow must not loop (every call must end in a bounded "
                       f"number of steps): send one of them to a queue or a hang-up instead")


def test_a_longer_loop_through_a_service_node():
    text = replace_once(DEFAULT_TEXT, 'next = "goodbye"', 'next = "hours"') + (
        '\n[nodes.hours]\ntype = "hours"\ncalendar = "business"\nopen = "order_progress"\nclosed = "goodbye"\n')
    (message,) = errors_of(text)
    assert "nodes.hours.open: closes a loop order_progress -> hours -> order_progress" in message


def test_syntax_error_names_line_and_column():
    text = replace_once(DEFAULT_TEXT, "[nodes.welcome]", "[nodes.welcome")
    assert errors_of(text) == [f"line {line_of(text, '[nodes.welcome')}, column 15: TOML syntax error: "
                               f"Expected ']' at the end of a table declaration"]
    text = replace_once(DEFAULT_TEXT, 'timeout_ms = 1500', 'timeout_ms = 1500 1500')
    (message,) = errors_of(text)
    assert message.startswith(f"line {line_of(text, 'timeout_ms')}, column 19: TOML syntax error")
    text = replace_once(DEFAULT_TEXT, 'retries = 0 ', 'retries = 0\nretries = 1 ')
    (message,) = errors_of(text)
    assert message.startswith(f"line {line_of(text, 'retries = 1')}, column ") and "TOML syntax error" in message


def test_every_problem_is_reported_at_once_in_line_order():
    text = DEFAULT_TEXT
    text = replace_once(text, MENU_KEY_9, '"9" = "sales"')
    text = replace_once(text, 'prompt = "goodbye"', 'prompt = "bye"')
    text = replace_once(text, 'audio = "hotline/welcome"', 'audio = "hotline/welcome.gsm"')
    text = replace_once(text, 'queue = "hotline-business"', 'queue = "hotline-biz"')
    messages = errors_of(text)
    assert len(messages) == 4
    lines = [int(re.match(r"line (\d+): ", m).group(1)) for m in messages]
    assert lines == sorted(lines)
    assert [m.split(": ")[1] for m in messages] == [
        "prompts.welcome.audio", 'nodes.main_menu.keys."9"', "nodes.business.queue", "nodes.goodbye.prompt"]


def test_missing_sections_and_empty_text():
    assert errors_of("") == ["flow: missing: the flow needs a [flow] table",
                             "nodes: missing: the flow needs a [nodes] table"]
    messages = errors_of('[flow]\nname = "x"\nstart = "a"\n')
    assert "line 1: flow.fallback_queue: missing: this key is required" in messages
    assert "nodes: missing: the flow needs a [nodes] table" in messages
    assert errors_of('flow = 3\n[nodes]\n')[:1] == ["line 1: flow: must be a table ([flow]), not an integer"]


def test_too_many_nodes():
    body = "".join(f'\n[nodes.q{i}]\ntype = "queue"\nqueue = "hotline-general"\n' for i in range(MAX_NODES + 1))
    text = '[flow]\nname = "big"\nstart = "q0"\nfallback_queue = "hotline-general"\n' + body
    assert errors_of(text) == [f"nodes: {MAX_NODES + 1} nodes, at most {MAX_NODES}"]


def test_deep_nesting_is_a_flow_error():
    assert errors_of("a = " + "[" * 50000) == ["TOML syntax error: arrays or tables nested too deeply"]


def test_bytes_and_non_utf8():
    assert parse_flow(DEFAULT_TEXT.encode(), QUEUES).name == "default"
    assert errors_of(b"\xff\xfe") == ["the flow is not UTF-8 text (byte 0)"]


def test_key_lines_finds_tables_dotted_and_inline_keys():
    text = ('[flow]\nname = "x"\n\n[nodes.m]\nkeys = { "1" = "a", \'#\' = "b" }\n'
            'choices."2".next = "c"\ns = """\nnot = a key\n"""\n[ nodes . "q q" ]\n')
    lines = key_lines(text)
    assert lines[("flow", "name")] == 2
    assert lines[("nodes", "m")] == 4
    assert lines[("nodes", "m", "keys", "1")] == 5 and lines[("nodes", "m", "keys", "#")] == 5
    assert lines[("nodes", "m", "choices", "2", "next")] == 6
    assert ("nodes", "m", "not") not in lines
    assert lines[("nodes", "q q")] == 10
    assert format_path(("nodes", "m", "keys", "7")) == 'nodes.m.keys."7"'
    assert format_path(("nodes", "q q", "x-y")) == 'nodes."q q".x-y'


# --------------------------------------------------------------------------- fuzz

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_any_text_parses_or_raises_flow_error(text):
    try:
        flow = parse_flow(text)
    except FlowError as exc:
        assert exc.messages and all(isinstance(m, str) and m for m in exc.messages)
    else:
        assert isinstance(flow, Flow)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_edited_default_flow_parses_or_raises_flow_error(data):
    """Random edits of a real flow (cut, duplicated or replaced spans) never raise anything else."""
    text = DEFAULT_TEXT
    for _ in range(data.draw(st.integers(1, 3))):
        start = data.draw(st.integers(0, len(text)))
        end = data.draw(st.integers(start, min(len(text), start + 40)))
        insert = data.draw(st.one_of(st.just(""), st.just(text[start:end] * 2),
                                     st.text(alphabet='[]{}"=.,\n #abc179_-', max_size=12)))
        text = text[:start] + insert + text[end:]
    try:
        flow = parse_flow(text, QUEUES)
    except FlowError as exc:
        assert exc.messages
        for message in exc.messages:
            assert re.match(r"(line \d+(, column \d+)?: |end of text: )?", message)
    else:
        assert flow.start in flow.nodes
