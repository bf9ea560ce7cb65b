"""IVR flows as data: the TOML format, its model and its validation. Pure: no I/O.

How this works: a flow is TOML text with three parts::

    [flow]                                   # name, start node, fallback queue, description
    name = "default"
    start = "welcome"
    fallback_queue = "hotline-general"       # where any error or an exhausted step budget lands

    [prompts.welcome]                        # every prompt: its Chinese text and its sound name
    text = "您好，12345热线。"
    audio = "hotline/welcome"

    [nodes.welcome]                          # every node: a type and that type's keys
    type = "play"
    prompts = ["welcome"]
    next = "general"

    [nodes.general]
    type = "queue"
    queue = "hotline-general"

``parse_flow`` reads the text (a TOML syntax error names its line and column), validates each
section with pydantic (unknown keys are errors, so a misspelt key never passes silently), then
checks the flow as a whole: the start node, every node, prompt and queue named exists, keys are
DTMF keys, a barge-in greeting leads to a menu, and the node graph has no loop, so every call
through a valid flow ends in a bounded number of steps. Every message names the key path (as
TOML spells it: ``nodes.main_menu.keys."7"``) and, where it can be found in the text, the line.
All errors are reported at once (``FlowError.messages``); nodes no caller can reach and prompts
nothing plays are warnings on the flow (``Flow.warnings``), so a node kept aside while editing
(a typhoon announcement out of season) does not block saving.

The time a caller who presses nothing spends before the flow ends (``no_key_seconds``) is
estimated from the prompt texts (``SECONDS_PER_CHAR`` per spoken character), the menu timeouts
and retries, and ``SERVICE_TIMEOUT`` per business look-up on the way.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import tomllib
import unicodedata
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Iterator, Literal, Mapping, Union

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, StrictBool, StrictInt,
                      StrictStr, TypeAdapter, ValidationError)

from telephony.model import EMERGENCY_NUMBER

MAX_SOURCE_CHARS = 200_000   # the storage keeps at most this much text per version
MAX_NODES = 100
MAX_PROMPTS = 200
MAX_PROMPTS_PER_NODE = 10
MAX_TEXT_CHARS = 1000
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})   # unicodedata categories a text refuses
MAX_AUDIO_CHARS = 200
PRIORITY_MAX = 10            # queue priority (QUEUE_PRIO): 0 normal .. 10 first
SERVICE_TIMEOUT = 2.0        # seconds a business look-up may take before the node's safe branch
SECONDS_PER_CHAR = 0.25      # estimated speaking time of one spoken character (Mandarin ~4/s)
NO_KEY_WARN_SECONDS = 15.0   # national standard: answer within 15 s; a longer no-key path warns
# the numbers the generated dialplan dials for a transfer: 110 (police, 一键转接); 119/120/122 are
# not linked up in the dialplan yet, so a flow cannot promise them
TRANSFER_TARGETS = (EMERGENCY_NUMBER,)

# --------------------------------------------------------------------------- value types

_ID_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,39}")
FLOW_NAME_RE = re.compile(r"[a-z0-9_-]{1,64}")            # as ivr_flow_versions.name
KEYWORD_RE = FLOW_NAME_RE                                  # topics, calendars: the same rule
LIST_RE = re.compile(r"[a-z0-9_-]{1,32}")                 # caller lists (as caller_list_entries)
STATUS_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")           # work-order status names
QUEUE_RE = re.compile(r"[A-Za-z0-9_-]{1,80}")             # as config.settings' queue names
LANGUAGE_RE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{2,8}){0,2}")  # BCP 47-like: yue, nan, zh-wuu
_AUDIO_RE = re.compile(r"[A-Za-z0-9_.\-/]+")
_DTMF_RE = re.compile(r"[0-9*#]")
# Extensions of the sound formats Asterisk 22 plays (format_*.so): a sound name is given without
# one, and a file under any of them is a recording Asterisk may choose (ivr/prompts.py).
SOUND_EXTENSIONS = (
    "wav", "wav16", "WAV", "wav49", "gsm", "alaw", "al", "alw", "ulaw", "ul", "mu", "ulw", "pcm",
    "au", "g722", "g723", "g723sf", "g726-40", "g726-32", "g726-24", "g726-16", "g729", "ilbc",
    "siren7", "siren14", "sln", "raw", "sln12", "sln16", "sln24", "sln32", "sln44", "sln48",
    "sln96", "sln192", "ogg", "spx", "vox", "mp3",
)


def _pattern(rx: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not rx.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value
    return AfterValidator(check)


def check_sound_name(value: str) -> str:
    """A sound name as STREAM FILE takes it (the flows', the prompt builder's and the survey's one
    rule): one AGI word, relative to the sounds directory, no extension. ValueError says why."""
    if not isinstance(value, str) or not value or len(value) > MAX_AUDIO_CHARS:
        raise ValueError(f"a sound name has 1 to {MAX_AUDIO_CHARS} characters")
    if not _AUDIO_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a sound name: one word of letters, digits and _ - . / "
                         f"(e.g. hotline/welcome)")
    parts = value.split("/")
    if value.startswith("/") or any(p in ("", ".", "..") or p.startswith((".", "-")) for p in parts):
        raise ValueError(f"{value!r}: a sound name is relative to the sounds directory, without empty, "
                         f"'.', '..' or dot- or dash-led parts")
    stem, dot, ext = parts[-1].rpartition(".")
    if dot and ext in SOUND_EXTENSIONS:
        raise ValueError(f"{value!r}: give the sound name without its extension "
                         f"({value[:-len(ext) - 1]!r})")
    return value


def check_prompt_text(value: str) -> str:
    """A prompt's text (the flows' and the prompt builder's one rule): not blank, bounded, one line
    of visible characters (an ideographic space is fine; controls, format characters and line or
    paragraph separators are not). ValueError says why."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("the text is empty")
    if len(value) > MAX_TEXT_CHARS:
        raise ValueError(f"the text has {len(value)} characters, at most {MAX_TEXT_CHARS}")
    for c in value:
        if unicodedata.category(c) in _INVISIBLE:
            raise ValueError(f"the text holds a control or invisible character U+{ord(c):04X}")
    return value


def _queue(value: str) -> str:
    if not QUEUE_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a queue name (letters, digits, '_' and '-')")
    if value.lower() == "general":
        raise ValueError("'general' is reserved in queues.conf and is not a queue name")
    return value


def _transfer_target(value: str) -> str:
    if value not in TRANSFER_TARGETS:
        raise ValueError(f"{value!r} is not a transfer target (one of {', '.join(TRANSFER_TARGETS)})")
    return value


def _frozen(value: dict) -> Mapping:
    return MappingProxyType(dict(value))


_ID_WHAT = "a name of letters, digits, '_' and '-' starting with a letter (at most 40)"
NodeId = Annotated[StrictStr, _pattern(_ID_RE, _ID_WHAT)]
PromptName = Annotated[StrictStr, _pattern(_ID_RE, _ID_WHAT)]
DtmfKey = Annotated[StrictStr, _pattern(_DTMF_RE, "a key (one of 0-9 * #)")]
QueueName = Annotated[StrictStr, AfterValidator(_queue)]
Language = Annotated[StrictStr, _pattern(LANGUAGE_RE, "a language code such as yue, nan or zh-wuu")]
Keyword = Annotated[StrictStr, _pattern(KEYWORD_RE, "a name of lowercase letters, digits, '_' and '-'")]
ListName = Annotated[StrictStr, _pattern(LIST_RE, "a list name of lowercase letters, digits, '_' and '-' "
                                                   "(at most 32)")]
StatusName = Annotated[StrictStr, _pattern(STATUS_RE, "a status name of lowercase letters, digits and '_'")]
Timeout = Annotated[StrictInt, Field(ge=1000, le=15000)]
Retries = Annotated[StrictInt, Field(ge=0, le=3)]
Priority = Annotated[StrictInt, Field(ge=0, le=PRIORITY_MAX)]
Boost = Annotated[StrictInt, Field(ge=1, le=PRIORITY_MAX)]


def _frozen_map(key: Any, value: Any, **constraints: Any) -> Any:
    """A dict validated as such, kept read-only, dumped as a dict."""
    return Annotated[dict[key, value], Field(**constraints), AfterValidator(_frozen),
                     PlainSerializer(dict, return_type=dict)]


# --------------------------------------------------------------------------- the model

class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FlowHeader(_Model):
    name: Annotated[StrictStr, _pattern(FLOW_NAME_RE, "a flow name of lowercase letters, digits, '_' and '-'")]
    start: NodeId
    fallback_queue: QueueName
    description: Annotated[StrictStr, Field(max_length=500)] = ""


class Prompt(_Model):
    text: Annotated[StrictStr, AfterValidator(check_prompt_text)]     # what it says, in Chinese
    audio: Annotated[StrictStr, AfterValidator(check_sound_name)]   # the sound STREAM FILE plays, e.g. hotline/welcome


KeyPath = tuple[str, ...]


class Node(_Model):
    """Base of the node types. ``targets``, ``prompt_refs`` and ``queue_refs`` list what a node
    names, each with its key path inside the node (for the messages)."""

    type: str
    asks: ClassVar[bool] = False    # a menu level: the caller chooses among keys

    def targets(self) -> Iterator[tuple[KeyPath, str]]:
        return iter(())

    def prompt_refs(self) -> Iterator[tuple[KeyPath, str]]:
        for name in ("prompt", "announce", "invalid_prompt", "closed_prompt", "accepted_prompt",
                     "not_found", "unavailable"):
            value = getattr(self, name, None)
            if value is not None:
                yield (name,), value
        for i, value in enumerate(getattr(self, "prompts", ())):
            yield ("prompts", str(i)), value

    def queue_refs(self) -> Iterator[tuple[KeyPath, str]]:
        value = getattr(self, "queue", None)
        if value is not None:
            yield ("queue",), value


class PlayNode(Node):
    """Play prompts, then go on. With ``barge_in`` the next node's keys interrupt the prompts and
    count as the answer to that node (a greeting before the menu); ``next`` must then be a menu
    or a language node."""

    type: Literal["play"]
    prompts: Annotated[tuple[PromptName, ...], Field(min_length=1, max_length=MAX_PROMPTS_PER_NODE)]
    barge_in: StrictBool = False
    next: NodeId

    def targets(self):
        yield ("next",), self.next


class MenuNode(Node):
    """Ask for one key. Timeout or invalid key: ask again up to ``retries`` times (after an invalid
    key the ``invalid_prompt`` plays first); then ``on_timeout``, or ``on_invalid`` if the last
    answer was an invalid key (default: ``on_timeout``). A prompt that fails to play takes
    ``on_timeout`` at once (a missing sound would fail again)."""

    type: Literal["menu"]
    prompt: PromptName
    keys: _frozen_map(DtmfKey, NodeId, min_length=1, max_length=12)
    timeout_ms: Timeout = 5000
    retries: Retries = 1
    invalid_prompt: PromptName | None = None
    on_timeout: NodeId
    on_invalid: NodeId | None = None
    asks: ClassVar[bool] = True

    def targets(self):
        for key, target in self.keys.items():
            yield ("keys", key), target
        yield ("on_timeout",), self.on_timeout
        if self.on_invalid is not None:
            yield ("on_invalid",), self.on_invalid


class LanguageChoice(_Model):
    language: Language
    next: NodeId


class LanguageNode(Node):
    """A menu whose keys also choose the caller's language or dialect (recorded on the result as
    HOTLINE_LANGUAGE); the same timeout, retries and branches as ``menu``."""

    type: Literal["language"]
    prompt: PromptName
    choices: _frozen_map(DtmfKey, LanguageChoice, min_length=1, max_length=12)
    timeout_ms: Timeout = 5000
    retries: Retries = 1
    invalid_prompt: PromptName | None = None
    on_timeout: NodeId
    on_invalid: NodeId | None = None
    asks: ClassVar[bool] = True

    def targets(self):
        for key, choice in self.choices.items():
            yield ("choices", key, "next"), choice.next
        yield ("on_timeout",), self.on_timeout
        if self.on_invalid is not None:
            yield ("on_invalid",), self.on_invalid


class QueueNode(Node):
    """Route to a queue (terminal), optionally after an announcement. ``priority`` is the caller's
    QUEUE_PRIO there, raised by caller lists; ``language`` records a dialect queue's language."""

    type: Literal["queue"]
    queue: QueueName
    priority: Priority = 0
    announce: PromptName | None = None
    language: Language | None = None


class LeaderNode(Node):
    """Route to the leader line while a leader slot is live on ``queue`` (terminal); otherwise,
    and whenever the check fails or is slow, ``fallback``."""

    type: Literal["leader"]
    queue: QueueName
    priority: Priority = 0
    announce: PromptName | None = None
    fallback: NodeId

    def targets(self):
        yield ("fallback",), self.fallback


class TopicNode(Node):
    """A special-topic announcement (typhoon, epidemic): while the admin's switch for ``topic``
    is on and now is inside its window, play ``prompts`` and go to ``active_next`` (default
    ``next``); otherwise, and whenever the check fails, go straight to ``next``."""

    type: Literal["topic"]
    topic: Keyword
    prompts: Annotated[tuple[PromptName, ...], Field(min_length=1, max_length=MAX_PROMPTS_PER_NODE)]
    next: NodeId
    active_next: NodeId | None = None

    def targets(self):
        yield ("next",), self.next
        if self.active_next is not None:
            yield ("active_next",), self.active_next


class EmergencyNode(Node):
    """Emergency advice, then transfer to 110 (terminal). With ``confirm_key`` the prompt asks for
    it: that key transfers, anything else (another key, no key, a failed prompt) goes to
    ``on_decline``, so nobody reaches 110 by accident."""

    type: Literal["emergency"]
    prompt: PromptName
    target: Annotated[StrictStr, AfterValidator(_transfer_target)] = EMERGENCY_NUMBER
    confirm_key: DtmfKey | None = None
    timeout_ms: Timeout = 5000
    on_decline: NodeId | None = None

    def targets(self):
        if self.on_decline is not None:
            yield ("on_decline",), self.on_decline


class OrderStatusNode(Node):
    """Self-service order progress: the caller keys an order number (digits only, up to
    ``max_digits``), the service looks it up for the calling number only, and the prompt of its
    status plays (``status_prompts``). Not found (or no digits): ``not_found`` plays and the
    caller may try again, up to ``retries`` times. No caller number, a failed or slow look-up, or a
    status without a prompt: ``unavailable`` (default ``not_found``). Then ``next``."""

    type: Literal["order_status"]
    prompt: PromptName
    max_digits: Annotated[StrictInt, Field(ge=1, le=20)] = 14
    timeout_ms: Annotated[StrictInt, Field(ge=1000, le=20000)] = 8000
    retries: Annotated[StrictInt, Field(ge=0, le=2)] = 1
    status_prompts: _frozen_map(StatusName, PromptName, min_length=1, max_length=20)
    not_found: PromptName
    unavailable: PromptName | None = None
    next: NodeId

    def prompt_refs(self):
        yield from super().prompt_refs()
        for status, name in self.status_prompts.items():
            yield ("status_prompts", status), name

    def targets(self):
        yield ("next",), self.next


class CallbackOfferNode(Node):
    """When the estimated wait in ``queue`` is over ``threshold_seconds``, offer a callback:
    ``accept_key`` ends the call with a callback request (terminal, after ``accepted_prompt``);
    any other key, no key, a short or unknown wait, or a failed estimate: ``next``."""

    type: Literal["callback_offer"]
    queue: QueueName
    threshold_seconds: Annotated[StrictInt, Field(ge=10, le=3600)]
    prompt: PromptName
    accept_key: DtmfKey = "1"
    timeout_ms: Timeout = 5000
    accepted_prompt: PromptName | None = None
    next: NodeId

    def targets(self):
        yield ("next",), self.next


class HoursNode(Node):
    """Business hours of dedicated seats that are not 7x24: inside ``calendar``'s hours go to
    ``open``; outside, play ``closed_prompt`` (if any) and go to ``closed``. A failed or slow
    check goes to ``closed`` without the prompt (closed should lead to the 7x24 general queue)."""

    type: Literal["hours"]
    calendar: Keyword
    open: NodeId
    closed: NodeId
    closed_prompt: PromptName | None = None

    def targets(self):
        yield ("open",), self.open
        yield ("closed",), self.closed


class CallerListNode(Node):
    """Caller lists (elderly, disabled, VIP): a caller on a list gets its priority boost on every
    queue routed to later (the highest boost of the caller's lists, priority capped at 10); a
    caller on a list of ``routes`` goes to that node (the first such list, in the order written),
    everyone else to ``next``. A failed look-up or no caller number: no boost, ``next``."""

    type: Literal["caller_list"]
    lists: _frozen_map(ListName, Boost, max_length=20) = Field(default_factory=dict)
    routes: _frozen_map(ListName, NodeId, max_length=20) = Field(default_factory=dict)
    next: NodeId

    def targets(self):
        for name, target in self.routes.items():
            yield ("routes", name), target
        yield ("next",), self.next


class HangupNode(Node):
    """End the call (terminal), after ``prompt`` if given."""

    type: Literal["hangup"]
    prompt: PromptName | None = None


AnyNode = Annotated[
    Union[PlayNode, MenuNode, LanguageNode, QueueNode, LeaderNode, TopicNode, EmergencyNode,
          OrderStatusNode, CallbackOfferNode, HoursNode, CallerListNode, HangupNode],
    Field(discriminator="type"),
]
NODE_TYPES: dict[str, type[Node]] = {
    cls.model_fields["type"].annotation.__args__[0]: cls  # type: ignore[union-attr]
    for cls in (PlayNode, MenuNode, LanguageNode, QueueNode, LeaderNode, TopicNode, EmergencyNode,
                OrderStatusNode, CallbackOfferNode, HoursNode, CallerListNode, HangupNode)
}
_NODE_ADAPTER: TypeAdapter[Node] = TypeAdapter(AnyNode)


@dataclass(frozen=True)
class Flow:
    """A validated flow. Read-only: ``prompts`` and ``nodes`` are mapping proxies of frozen models."""

    name: str
    start: str
    fallback_queue: str
    description: str
    prompts: Mapping[str, Prompt]
    nodes: Mapping[str, Node]
    warnings: tuple[str, ...] = ()
    source: str = field(default="", repr=False)

    def prompt_list(self) -> list[tuple[str, str, str]]:
        """(name, Chinese text, sound name) of every prompt, for the prompt builder."""
        return [(name, p.text, p.audio) for name, p in self.prompts.items()]

    def queues(self) -> set[str]:
        """Every queue the flow can route to, the fallback queue included."""
        return {self.fallback_queue} | {q for node in self.nodes.values() for _, q in node.queue_refs()}


class FlowError(ValueError):
    """A flow that cannot be used; ``messages`` has one line per problem, each naming its key path
    and, where known, its line."""

    def __init__(self, messages: list[str]) -> None:
        self.messages = list(messages)
        super().__init__("invalid IVR flow:\n" + "\n".join(f"  {m}" for m in self.messages))


# --------------------------------------------------------------------------- parsing

def parse_flow(text: str, known_queues: set[str] | frozenset[str] | None = None) -> Flow:
    """Validate a flow's TOML text. ``known_queues``: the queue names the site has (case matters,
    as in the dialplan's check); None skips that check. Raises FlowError with every problem."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FlowError([f"the flow is not UTF-8 text (byte {exc.start})"]) from None
    if not isinstance(text, str):
        raise FlowError([f"a flow is TOML text, not {type(text).__name__}"])
    if len(text) > MAX_SOURCE_CHARS:
        raise FlowError([f"the flow has {len(text)} characters, at most {MAX_SOURCE_CHARS}"])
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FlowError([_syntax_message(str(exc))]) from None
    except RecursionError:
        raise FlowError(["TOML syntax error: arrays or tables nested too deeply"]) from None
    report = _Report(text)
    checker = _Checker(data, report, known_queues)
    flow = checker.run()
    if report.errors:
        raise FlowError(report.sorted_errors())
    assert flow is not None
    return Flow(name=flow[0].name, start=flow[0].start, fallback_queue=flow[0].fallback_queue,
                description=flow[0].description, prompts=MappingProxyType(flow[1]),
                nodes=MappingProxyType(flow[2]), warnings=tuple(report.sorted_warnings()), source=text)


def _syntax_message(message: str) -> str:
    m = re.search(r"\(at line (\d+), column (\d+)\)$", message)
    if m:
        what = message[:m.start()].strip()
        return f"line {m.group(1)}, column {m.group(2)}: TOML syntax error: {what}"
    m = re.search(r"\(at end of document\)$", message)
    if m:
        return f"end of text: TOML syntax error: {message[:m.start()].strip()}"
    return f"TOML syntax error: {message}"


class _Checker:
    def __init__(self, data: dict, report: "_Report", known_queues) -> None:
        self.data = data
        self.report = report
        self.known = None if known_queues is None else set(known_queues)
        self.error = report.error

    def run(self) -> tuple[FlowHeader, dict[str, Prompt], dict[str, Node]] | None:
        data = self.data
        for key in data:
            if key not in ("flow", "prompts", "nodes"):
                self.error((key,), "unknown section (a flow has [flow], [prompts.<name>] and [nodes.<id>])")
        header = self._section_header()
        prompts = self._section_prompts()
        nodes = self._section_nodes()
        raw_prompts = data.get("prompts") if isinstance(data.get("prompts"), dict) else {}
        raw_nodes = data.get("nodes") if isinstance(data.get("nodes"), dict) else {}
        node_names = set(raw_nodes)
        prompt_names = set(raw_prompts)
        if header is not None:
            if header.start not in node_names:
                self._unknown(("flow", "start"), "node", header.start, node_names)
            self._check_queue(("flow", "fallback_queue"), header.fallback_queue)
        for node_id, node in nodes.items():
            base = ("nodes", node_id)
            for path, target in node.targets():
                if target not in node_names:
                    self._unknown(base + path, "node", target, node_names)
            for path, name in node.prompt_refs():
                if name not in prompt_names:
                    self._unknown(base + path, "prompt", name, prompt_names)
            for path, queue in node.queue_refs():
                self._check_queue(base + path, queue)
            self._check_node(node_id, node, nodes)
        if self.report.errors or header is None:
            return None
        self._check_loops(nodes)
        if self.report.errors:
            return None
        self._warn(header, prompts, nodes)
        return header, prompts, nodes

    # sections ------------------------------------------------------------------------------

    def _table(self, key: str, required: bool) -> dict | None:
        value = self.data.get(key)
        if value is None:
            if required:
                self.error((key,), f"missing: the flow needs a [{key}] table")
            return None
        if not isinstance(value, dict):
            self.error((key,), f"must be a table ([{key}]), not {_kind(value)}")
            return None
        return value

    def _section_header(self) -> FlowHeader | None:
        raw = self._table("flow", True)
        return None if raw is None else self._validate(FlowHeader, raw, ("flow",))

    def _section_prompts(self) -> dict[str, Prompt]:
        raw = self._table("prompts", False) or {}
        if len(raw) > MAX_PROMPTS:
            self.error(("prompts",), f"{len(raw)} prompts, at most {MAX_PROMPTS}")
            return {}
        prompts = {}
        for name, body in raw.items():
            if not _ID_RE.fullmatch(name):
                self.error(("prompts", name), f"{name!r} is not a prompt name ({_ID_WHAT})")
                continue
            prompt = self._validate(Prompt, body, ("prompts", name))
            if prompt is not None:
                prompts[name] = prompt
        return prompts

    def _section_nodes(self) -> dict[str, Node]:
        raw = self._table("nodes", True)
        if raw is None:
            return {}
        if not raw:
            self.error(("nodes",), "the flow has no nodes")
        if len(raw) > MAX_NODES:
            self.error(("nodes",), f"{len(raw)} nodes, at most {MAX_NODES}")
            return {}
        nodes = {}
        for node_id, body in raw.items():
            if not _ID_RE.fullmatch(node_id):
                self.error(("nodes", node_id), f"{node_id!r} is not a node id ({_ID_WHAT})")
                continue
            node = self._validate(_NODE_ADAPTER, body, ("nodes", node_id))
            if node is not None:
                nodes[node_id] = node
        return nodes

    def _validate(self, model, raw: Any, base: KeyPath):
        adapter = model if isinstance(model, TypeAdapter) else None
        try:
            if adapter is not None:
                return adapter.validate_python(raw)
            return model.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                loc = tuple(str(p) for p in err["loc"])
                node_type = raw.get("type") if isinstance(raw, dict) else None
                if adapter is not None and loc and loc[0] == node_type:
                    loc = loc[1:]   # the discriminated union puts the tag first
                self.error(base + tuple(p for p in loc if p != "[key]"),
                           _pydantic_message(err, model, raw, loc))
            return None

    # semantic checks -----------------------------------------------------------------------

    def _unknown(self, path: KeyPath, what: str, name: str, known: set[str]) -> None:
        hint = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
        more = f" (did you mean {hint[0]!r}?)" if hint else ""
        table = format_path(("nodes" if what == "node" else "prompts", name))
        self.error(path, f"names unknown {what} {name!r}{more}; define it as [{table}]")

    def _check_queue(self, path: KeyPath, queue: str) -> None:
        if self.known is None or queue in self.known:
            return
        same = [q for q in self.known if q.lower() == queue.lower()]
        hint = same or difflib.get_close_matches(queue, sorted(self.known), n=1, cutoff=0.8)
        more = f" (did you mean {hint[0]!r}?)" if hint else ""
        known = ", ".join(sorted(self.known)) or "none configured"
        self.error(path, f"names unknown queue {queue!r}{more}; known queues: {known}")

    def _check_node(self, node_id: str, node: Node, nodes: dict[str, Node]) -> None:
        base = ("nodes", node_id)
        if isinstance(node, PlayNode) and node.barge_in:
            nxt = nodes.get(node.next)
            if nxt is not None and not isinstance(nxt, (MenuNode, LanguageNode)):
                self.error(base + ("barge_in",), f"a barge-in play hands the key pressed to the next node, "
                           f"so next must be a menu or language node ({node.next!r} is a {nxt.type} node)")
        if isinstance(node, EmergencyNode):
            if node.confirm_key is not None and node.on_decline is None:
                self.error(base + ("on_decline",), "missing: with confirm_key, on_decline says where a "
                           "caller who does not confirm goes")
            if node.confirm_key is None and node.on_decline is not None:
                self.error(base + ("on_decline",), "only with confirm_key: without it the caller is "
                           "transferred after the advice")

    def _check_loops(self, nodes: dict[str, Node]) -> None:
        """Depth-first search; every edge back to a node on the stack closes a loop."""
        state: dict[str, int] = {}          # 1 on the stack, 2 done
        seen_loops: set[frozenset[str]] = set()
        for root in nodes:
            if state.get(root):
                continue
            stack: list[tuple[str, Iterator[tuple[KeyPath, str]]]] = [(root, nodes[root].targets())]
            state[root] = 1
            while stack:
                node_id, edges = stack[-1]
                for path, target in edges:
                    if target not in nodes:
                        continue
                    if state.get(target) == 1:
                        ids = [n for n, _ in stack]
                        loop = ids[ids.index(target):] + [target]
                        if frozenset(loop) not in seen_loops:
                            seen_loops.add(frozenset(loop))
                            self.error(("nodes", node_id) + path,
                                       f"closes a loop {' -> '.join(loop)}; a flow must not loop (every "
                                       f"call must end in a bounded number of steps): send one of them "
                                       f"to a queue or a hang-up instead")
                    elif not state.get(target):
                        state[target] = 1
                        stack.append((target, nodes[target].targets()))
                        break
                else:
                    state[node_id] = 2
                    stack.pop()

    def _warn(self, header: FlowHeader, prompts: dict[str, Prompt], nodes: dict[str, Node]) -> None:
        reached = _reachable(header.start, nodes)
        for node_id in nodes:
            if node_id not in reached:
                self.report.warn(("nodes", node_id), f"no caller reaches this node from flow.start "
                                 f"{header.start!r} (kept, but unused)")
        used = {name for node_id in reached for _, name in nodes[node_id].prompt_refs()}
        for name in prompts:
            if name not in used:
                self.report.warn(("prompts", name), "no reachable node plays this prompt")
        seconds = _no_key_seconds(header.start, prompts, nodes)
        if seconds > NO_KEY_WARN_SECONDS:
            self.report.warn(("flow", "start"), f"a caller who presses nothing may wait about "
                             f"{seconds:.1f} s before the flow ends (over {NO_KEY_WARN_SECONDS:.0f} s)")


def _kind(value: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
            float: "a float"}.get(type(value), type(value).__name__)


def _allowed_keys(model, raw: Any, loc: KeyPath) -> list[str] | None:
    """The keys a table at ``loc[:-1]`` may have (for an unknown-key message)."""
    if isinstance(model, TypeAdapter):
        cls = NODE_TYPES.get(raw.get("type")) if isinstance(raw, dict) else None
        if cls is None:
            return None
        if len(loc) == 3 and loc[0] == "choices":
            return list(LanguageChoice.model_fields)
        return list(cls.model_fields) if len(loc) == 1 else None
    return list(model.model_fields) if len(loc) == 1 else None


def _pydantic_message(err: dict, model, raw: Any, loc: KeyPath) -> str:
    kind = err["type"]
    if kind == "missing":
        return "missing: this key is required"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, raw, loc) or []
        hint = difflib.get_close_matches(loc[-1], allowed, n=1, cutoff=0.8) if loc else []
        notes = ([f"did you mean {hint[0]!r}?"] if hint else []) + (
            [f"allowed: {', '.join(allowed)}"] if allowed else [])
        return "unknown key" + (f" ({'; '.join(notes)})" if notes else "")
    if kind == "union_tag_invalid":
        return f"type = {_toml_value(err['ctx']['tag'])} is not a node type (one of: {', '.join(NODE_TYPES)})"
    if kind == "union_tag_not_found":
        return f"missing: type = \"...\" (one of: {', '.join(NODE_TYPES)})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a table, not {_kind(err['input'])}"
    if kind == "value_error":
        return str(err["ctx"]["error"])
    message = err["msg"]
    message = message[0].lower() + message[1:]
    value = err.get("input")
    if isinstance(value, (str, int, float, bool)) and not (isinstance(value, str) and len(value) > 60):
        message += f" (got {_toml_value(value)})"
    return message


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


# --------------------------------------------------------------------------- where errors are

_KEY = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED = rf"{_KEY}(?:[ \t]*\.[ \t]*{_KEY})*"
_HEADER = re.compile(rf"^[ \t]*\[\[?[ \t]*({_DOTTED})[ \t]*\]")
_ASSIGN = re.compile(rf"^[ \t]*({_DOTTED})[ \t]*=")
_INLINE = re.compile(rf"[{{,][ \t]*({_DOTTED})[ \t]*=")
_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _split_dotted(text: str) -> KeyPath:
    parts = []
    for m in re.finditer(_KEY, text):
        token = m.group(0)
        if token.startswith('"'):
            try:
                token = json.loads(token)
            except ValueError:
                token = token[1:-1]
        elif token.startswith("'"):
            token = token[1:-1]
        parts.append(token)
    return tuple(parts)


def key_lines(text: str) -> dict[KeyPath, int]:
    """The line (1-based) where each table and key of the TOML text is written. Line based: keys
    inside an inline table are found on their line; anything else inside a multi-line string is
    skipped."""
    lines: dict[KeyPath, int] = {}
    table: KeyPath = ()
    in_string: str | None = None
    for number, line in enumerate(text.split("\n"), 1):
        if in_string is not None:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        m = _HEADER.match(line)
        if m:
            table = _split_dotted(m.group(1))
            lines.setdefault(table, number)
            continue
        m = _ASSIGN.match(line)
        if not m:
            continue
        path = table + _split_dotted(m.group(1))
        lines.setdefault(path, number)
        rest = line[m.end():]
        for inner in _INLINE.finditer(rest):
            lines.setdefault(path + _split_dotted(inner.group(1)), number)
        for quote in ('"""', "'''"):
            if rest.count(quote) % 2 == 1:
                in_string = quote
    return lines


def format_path(path: KeyPath) -> str:
    """A key path as TOML spells it: ``nodes.main_menu.keys."7"``."""
    return ".".join(p if _BARE.fullmatch(p) else json.dumps(p, ensure_ascii=False) for p in path)


class _Report:
    def __init__(self, text: str) -> None:
        self.text = text
        self._lines: dict[KeyPath, int] | None = None
        self.errors: list[tuple[int, KeyPath, str]] = []
        self.warnings: list[tuple[int, KeyPath, str]] = []

    def line_of(self, path: KeyPath) -> int:
        if self._lines is None:
            self._lines = key_lines(self.text)
        for end in range(len(path), 0, -1):
            number = self._lines.get(path[:end])
            if number is not None:
                return number
        return 0

    def error(self, path: KeyPath, message: str) -> None:
        self.errors.append((self.line_of(path), path, message))

    def warn(self, path: KeyPath, message: str) -> None:
        self.warnings.append((self.line_of(path), path, message))

    @staticmethod
    def _format(items: list[tuple[int, KeyPath, str]]) -> list[str]:
        out = []
        for line, path, message in sorted(items, key=lambda i: (i[0], i[1])):
            where = f"line {line}: " if line else ""
            out.append(f"{where}{format_path(path)}: {message}")
        return out

    def sorted_errors(self) -> list[str]:
        return self._format(self.errors)

    def sorted_warnings(self) -> list[str]:
        return self._format(self.warnings)


# --------------------------------------------------------------------------- flow measures

def _reachable(start: str, nodes: Mapping[str, Node]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node_id = todo.pop()
        if node_id in seen or node_id not in nodes:
            continue
        seen.add(node_id)
        todo.extend(target for _, target in nodes[node_id].targets())
    return seen


def speaking_seconds(text: str) -> float:
    """Estimated time to say a prompt: ``SECONDS_PER_CHAR`` per spoken character (CJK, letter,
    digit: 12345 is said digit by digit); punctuation and blanks count nothing."""
    return SECONDS_PER_CHAR * sum(1 for c in text if c.isalnum())


def _no_key_seconds(start: str, prompts: Mapping[str, Prompt], nodes: Mapping[str, Node]) -> float:
    def say(name: str | None) -> float:
        return speaking_seconds(prompts[name].text) if name in prompts else 0.0

    memo: dict[str, float] = {}

    def worst(node_id: str) -> float:
        if node_id in memo:
            return memo[node_id]
        memo[node_id] = math.inf      # a loop (never in a valid flow) counts as unbounded
        n = nodes.get(node_id)
        if n is None:
            cost = 0.0
        elif isinstance(n, PlayNode):
            cost = sum(say(p) for p in n.prompts) + worst(n.next)
        elif isinstance(n, (MenuNode, LanguageNode)):
            cost = (1 + n.retries) * (say(n.prompt) + n.timeout_ms / 1000) + worst(n.on_timeout)
        elif isinstance(n, QueueNode):
            cost = say(n.announce)
        elif isinstance(n, LeaderNode):
            cost = SERVICE_TIMEOUT + max(say(n.announce), worst(n.fallback))
        elif isinstance(n, TopicNode):
            active = sum(say(p) for p in n.prompts) + worst(n.active_next or n.next)
            cost = SERVICE_TIMEOUT + max(worst(n.next), active)
        elif isinstance(n, EmergencyNode):
            if n.confirm_key is None:
                cost = say(n.prompt)
            else:
                cost = say(n.prompt) + n.timeout_ms / 1000 + worst(n.on_decline or "")
        elif isinstance(n, OrderStatusNode):
            cost = (1 + n.retries) * (say(n.prompt) + n.timeout_ms / 1000) + worst(n.next)
        elif isinstance(n, CallbackOfferNode):
            cost = SERVICE_TIMEOUT + say(n.prompt) + n.timeout_ms / 1000 + worst(n.next)
        elif isinstance(n, HoursNode):
            cost = SERVICE_TIMEOUT + max(worst(n.open), say(n.closed_prompt) + worst(n.closed))
        elif isinstance(n, CallerListNode):
            cost = SERVICE_TIMEOUT + max([worst(n.next)] + [worst(t) for t in n.routes.values()])
        elif isinstance(n, HangupNode):
            cost = say(n.prompt)
        else:
            cost = 0.0
        memo[node_id] = cost
        return cost

    return worst(start)


def no_key_seconds(flow: Flow) -> float:
    """Worst-case seconds from answer to the end of the flow for a caller who presses nothing:
    prompts at ``SECONDS_PER_CHAR`` per spoken character, every menu's timeout on each try, and
    ``SERVICE_TIMEOUT`` for each business look-up, taking the longest branch wherever the
    look-up's answer decides."""
    return _no_key_seconds(flow.start, flow.prompts, flow.nodes)


def menu_depth(flow: Flow) -> int:
    """The most menu levels (menu and language nodes) a caller can pass through."""
    memo: dict[str, int] = {}

    def depth(node_id: str) -> int:
        if node_id not in memo:
            node = flow.nodes[node_id]
            memo[node_id] = 0
            below = [depth(t) for _, t in node.targets() if t in flow.nodes]
            memo[node_id] = int(node.asks) + max(below, default=0)
        return memo[node_id]

    return depth(flow.start)
