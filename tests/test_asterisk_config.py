"""The Asterisk 22 configuration generator (config/asterisk.py) and the queues.conf importer.

Every snippet is parsed back with pyst2's ``asterisk.config.Config``, the reader a site's tooling
would use, and checked section by section.
"""

from __future__ import annotations

import re
from pathlib import Path

import asterisk.config
import pytest

from config.asterisk import (
    render_all, render_dialplan, render_features, render_leader_dialplan, render_manager, render_queues,
)
from config.importer import QueuesImportError, import_queues
from config.settings import load_settings

FIXTURES = Path(__file__).parent / "fixtures" / "asterisk-22" / "pbx-config"

# pyst2's Config.load() does open(filename).readlines() and never closes the file: CPython warns
# "unclosed file" (ResourceWarning) as soon as it is read. Only that warning is let through here;
# config.importer reads with its own load() and does not leak.
pytestmark = pytest.mark.filterwarnings("ignore:unclosed file <_io.TextIOWrapper:ResourceWarning")

SECRET = "s3cr3t-Hotline-AMI-value-9f2c"
# after Queue() with option c: a seat answered and hung up (QUEUESTATUS=CONTINUE) -> the survey
SURVEY_STEP = 'GotoIf($["${REGEX("^CONTINUE$" ${QUEUESTATUS})}" = "1"]?hotline-survey,s,1)'


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("HOTLINE_CONFIG", "HOTLINE_AMI__SECRET", "HOTLINE_AMI__SECRET_FILE", "HOTLINE_AMI__HOST"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def default_settings(monkeypatch):
    monkeypatch.setenv("HOTLINE_AMI__SECRET", SECRET)
    settings = load_settings()
    assert settings.ami.secret.get_secret_value() == SECRET
    return settings


@pytest.fixture
def big_settings(monkeypatch):
    monkeypatch.setenv("HOTLINE_AMI__SECRET", SECRET)
    monkeypatch.setenv("HOTLINE_AMI__HOST", "10.20.0.5")
    return load_settings(
        node_id="pbx-east",
        recordings_dir="/srv/hotline/recordings",
        agi={"advertise_host": "10.20.0.9", "listen_port": 4600},
        ami={"username": "hotline-svc", "port": 5039},
        queues=[
            {"name": "hl-general", "purpose": "general", "strategy": "rrmemory", "ring_timeout": 12, "max_wait": 150,
             "wrapup": 8, "service_level": 20},
            {"name": "hl-business", "purpose": "business", "strategy": "leastrecent", "ring_timeout": 20,
             "max_wait": 300, "wrapup": 10, "service_level": 30, "category": "business_environment"},
            {"name": "hl-dialect", "purpose": "dialect", "strategy": "linear", "max_wait": 240},
            {"name": "hl-leader", "purpose": "leader", "strategy": "ringall", "ring_timeout": 30, "max_wait": 600,
             "wrapup": 0},
        ],
        seats=[
            {"interface": "PJSIP/8001", "name": "Seat 8001", "queues": ["hl-general", "hl-business"]},
            {"interface": "PJSIP/8002", "name": "坐席 8002", "queues": ["hl-general"], "penalty": 2},
            {"interface": "PJSIP/8003", "name": "Seat 8003", "state_interface": "PJSIP/8103",
             "queues": ["hl-dialect"]},
            {"interface": "PJSIP/8900", "name": "Leader 8900", "queues": ["hl-leader", "hl-general"], "penalty": 5},
        ],
        ivr={"default_queue": "hl-general"},
    )


def parse(tmp_path: Path, name: str, text: str) -> dict[str, list[tuple[str, str]]]:
    """pyst2's reading of a snippet: section name -> [(key, value)] in file order."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    cfg = asterisk.config.Config(str(path))
    sections: dict[str, list[tuple[str, str]]] = {}
    for cat in cfg.categories:
        assert cat.name not in sections, f"section [{cat.name}] twice in {name}"
        sections[cat.name] = [(item.name, item.value.strip()) for item in cat.items]
    return sections


def keys(items: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in items:
        assert k not in out, f"key {k} repeated"
        out[k] = v
    return out


def dialplan_steps(items: list[tuple[str, str]]) -> list[str]:
    """The application calls of the 12345 extension, in order (priority/label prefix removed)."""
    steps = []
    for k, v in items:
        assert k in ("exten", "same"), k
        if k == "exten":
            exten, _prio, app = v.split(",", 2)
            if exten != "12345":
                break
        else:
            _prio, app = v.split(",", 1)
        steps.append(app)
    return steps


# --------------------------------------------------------------------------- dialplan


def check_dialplan(tmp_path, settings, agi_url, default_queue, waits: dict[str, int], recordings: str):
    text = render_dialplan(settings)
    sections = parse(tmp_path, "extensions.conf", text)
    assert set(sections) == {"hotline-inbound", "hotline-survey", "hotline-hangup"}
    steps = dialplan_steps(sections["hotline-inbound"])
    assert sections["hotline-inbound"][0] == ("exten", f"12345,1,{steps[0]}")

    # Answer, hangup handler, the safe defaults, then the IVR.
    assert steps[1] == "Answer()"
    assert steps[2] == "Set(CHANNEL(hangup_handler_push)=hotline-hangup,s,1)"
    agi_at = steps.index(f"AGI({agi_url})")
    assert steps[3:agi_at] == ["Set(HOTLINE_QUEUE=)", "Set(HOTLINE_QUEUE_TIMEOUT=)", "Set(HOTLINE_PRIORITY=)",
                               "Set(HOTLINE_TRANSFER=)", "Set(HOTLINE_CALLBACK_REQUESTED=)",
                               "Set(HOTLINE_IVR_DONE=)", "Set(HOTLINE_SURVEY=)"]   # nothing inherited survives

    after = steps[agi_at + 1:]
    # A callback request hangs up before anything is recorded; the recording covers 110 and the queue.
    assert after[0] == 'GotoIf($["${REGEX("^1$" ${HOTLINE_CALLBACK_REQUESTED})}" = "1"]?callback)'
    # MixMonitor with option b into the recordings directory, before 110 and the queue.
    assert after[1] == f"MixMonitor({recordings}/${{UNIQUEID}}.wav,b)"
    assert after[2] == 'GotoIf($["${REGEX("^110$" ${HOTLINE_TRANSFER})}" = "1"]?emergency)'
    after = after[3:]
    # The fallback: anything but a configured queue name becomes the default queue, with its category.
    names = [q.name for q in settings.queues]
    assert after[0] == f'GotoIf($["${{REGEX("^({"|".join(names)})$" ${{HOTLINE_QUEUE}})}}" = "1"]?queue_ok)'
    assert after[1] == f"Set(HOTLINE_QUEUE={default_queue})"
    assert after[2] == f"Set(HOTLINE_CATEGORY={settings.queue(default_queue).category})"
    # The timeout: the service's value if numeric, else the chosen queue's max wait.
    assert after[3].startswith("GotoIf(") and after[3].endswith("?timeout_ok)")
    assert "HOTLINE_QUEUE_TIMEOUT" in after[3]
    assert after[4] == f"Set(HOTLINE_QUEUE_TIMEOUT={waits[default_queue]})"
    per_queue = {}
    i = 5
    while after[i].startswith("ExecIf("):
        m = re.fullmatch(r'ExecIf\(\$\["\$\{HOTLINE_QUEUE\}" = "([\w-]+)"\]\?Set\(HOTLINE_QUEUE_TIMEOUT=(\d+)\)\)', after[i])
        assert m, after[i]
        per_queue[m.group(1)] = int(m.group(2))
        i += 1
    assert per_queue == {q: w for q, w in waits.items() if q != default_queue}
    # Priority only when it is a small number.
    assert after[i].startswith("GotoIf(") and "HOTLINE_PRIORITY" in after[i] and after[i].endswith("?queue)")
    assert after[i + 1] == "Set(QUEUE_PRIO=${HOTLINE_PRIORITY})"
    # Queue with the timeout 5th (after the overflow counter, if any queue overflows).
    queue_at = next(j for j in range(i + 2, len(after)) if after[j].startswith("Queue("))
    assert after[i + 2:queue_at] == (["Set(HOTLINE_OVERFLOWS=0)"] if any(q.overflow for q in settings.queues)
                                     else [])
    queue_call = after[queue_at]
    m = re.fullmatch(r"Queue\((.*)\)", queue_call)
    assert m, queue_call
    args = m.group(1).split(",")
    assert args[0] == "${HOTLINE_QUEUE}"
    assert args[1] == "ct"  # t: the seat may transfer; c: on to the survey when the seat hangs up
    assert args[2] == "" and args[3] == ""
    assert args[4] == "${HOTLINE_QUEUE_TIMEOUT}"
    assert after[queue_at + 1] == "NoOp(Hotline queue exit ${QUEUESTATUS})"
    assert after[queue_at + 2] == SURVEY_STEP
    assert after[-1] == "Hangup()"
    # Labels used by GotoIf exist, once each.
    raw = [v for _k, v in sections["hotline-inbound"]]
    for label in ("route", "queue_ok", "timeout_ok", "queue", "callback", "emergency", "emergency_done"):
        assert sum(v.startswith(f"n({label}),") for v in raw) == 1, label
    # The survey: the service's survey route, then the end of the call.
    survey_url = agi_url.rsplit("/", 1)[0] + "/survey"
    assert sections["hotline-survey"] == [("exten", "s,1,NoOp(Hotline satisfaction survey)"),
                                          ("same", f"n,AGI({survey_url})"), ("same", "n,Hangup()")]
    # Hangup handler returns.
    assert sections["hotline-hangup"][-1] == ("same", "n,Return()")
    # Nothing caller-controlled is used anywhere.
    assert "CALLERID" not in text
    # HOTLINE_QUEUE is only ever read inside REGEX(), a comparison after the whitelist, or Queue().
    for step in after:
        if "${HOTLINE_PRIORITY}" in step and step.startswith("Set(QUEUE_PRIO"):
            continue
        for var in ("HOTLINE_QUEUE_TIMEOUT", "HOTLINE_PRIORITY"):
            if "${" + var + "}" in step and not step.startswith(("GotoIf(", "Queue(")):
                pytest.fail(f"{var} used outside a check: {step}")
    # The IVR's transfer and callback request are read once each, inside REGEX() (0 or 1 only).
    for var in ("HOTLINE_TRANSFER", "HOTLINE_CALLBACK_REQUESTED"):
        reads = [step for step in steps if "${" + var + "}" in step]
        assert len(reads) == 1 and reads[0].startswith('GotoIf($["${REGEX("^') and \
            reads[0].count("${" + var + "})}") == 1, reads
    return text


def test_dialplan_default_settings(tmp_path, default_settings):
    text = check_dialplan(
        tmp_path,
        default_settings,
        agi_url="agi://127.0.0.1:4573/ivr",
        default_queue="hotline-general",
        waits={q.name: q.max_wait for q in default_settings.queues},
        recordings="/var/spool/asterisk/monitor",
    )
    assert "[hotline-inbound]" in text


def test_dialplan_several_queues(tmp_path, big_settings):
    check_dialplan(
        tmp_path,
        big_settings,
        agi_url="agi://10.20.0.9:4600/ivr",
        default_queue="hl-general",
        waits={"hl-general": 150, "hl-business": 300, "hl-dialect": 240, "hl-leader": 600},
        recordings="/srv/hotline/recordings",
    )


def test_dialplan_extra_dids_and_ipv6_agi(tmp_path, default_settings):
    default_settings.agi.advertise_host = "2001:db8::9"
    text = render_dialplan(default_settings, dids=["_0571X.", "87654321"])
    sections = parse(tmp_path, "extensions.conf", text)
    inbound = sections["hotline-inbound"]
    assert ("exten", "_0571X.,1,Goto(hotline-inbound,12345,1)") in inbound
    assert ("exten", "87654321,1,Goto(hotline-inbound,12345,1)") in inbound
    assert any(v.endswith("AGI(agi://[2001:db8::9]:4573/ivr)") for _k, v in inbound)


# --------------------------------------------------------------------------- queues.conf


QUEUE_FIXED = {
    "retry": "1",
    "timeoutpriority": "app",
    "ringinuse": "no",
    "joinempty": "yes",
    "leavewhenempty": "no",
    "announce-frequency": "0",
    "setinterfacevar": "yes",
    "setqueuevar": "yes",
    "setqueueentryvar": "yes",
    "autofill": "yes",
    "autopause": "no",
    "maxlen": "0",
}


def check_queues(tmp_path, settings):
    sections = parse(tmp_path, "queues.conf", render_queues(settings))
    assert list(sections) == ["general"] + [q.name for q in settings.queues]
    general = keys(sections["general"])
    assert general["persistentmembers"] == "no"
    assert general["shared_lastcall"] == "yes"
    assert general["log_membername_as_agent"] == "yes"
    for q in settings.queues:
        section = keys(sections[q.name])
        assert "member" not in section, "no static members: the service adds seats with QueueAdd"
        assert section["strategy"] == q.strategy
        assert section["timeout"] == str(q.ring_timeout)
        assert section["wrapuptime"] == str(q.wrapup)
        assert section["servicelevel"] == str(q.service_level)
        for k, v in QUEUE_FIXED.items():
            assert section[k] == v, (q.name, k)
    return sections


def test_queues_default_settings(tmp_path, default_settings):
    check_queues(tmp_path, default_settings)


def test_queues_several_queues_and_seats(tmp_path, big_settings):
    check_queues(tmp_path, big_settings)
    text = render_queues(big_settings)
    # The seats appear only as comments, for the site's checklist of PJSIP endpoints.
    assert "; seat (QueueAdd at start): PJSIP/8002 name '坐席 8002' state PJSIP/8002 penalty 2" in text
    assert "PJSIP/8003 name 'Seat 8003' state PJSIP/8103" in text


def test_generated_queues_conf_round_trips_through_the_importer(tmp_path, big_settings):
    path = tmp_path / "queues.conf"
    path.write_text(render_queues(big_settings), encoding="utf-8")
    imported = {q["name"]: q for q in import_queues(path)}
    assert list(imported) == [q.name for q in big_settings.queues]
    for q in big_settings.queues:
        got = imported[q.name]
        assert (got["strategy"], got["timeout"], got["retry"], got["wrapuptime"]) == (q.strategy, q.ring_timeout, 1, q.wrapup)
        assert got["members"] == []


# --------------------------------------------------------------------------- manager.conf


def test_manager_default_settings(tmp_path, default_settings):
    sections = parse(tmp_path, "manager.conf", render_manager(default_settings))
    assert list(sections) == ["general", "hotline"]
    general = keys(sections["general"])
    assert general == {"enabled": "yes", "port": "5038", "bindaddr": "127.0.0.1", "timestampevents": "yes"}
    user = sections["hotline"]
    acl = [(k, v) for k, v in user if k in ("deny", "permit")]
    assert acl == [("deny", "0.0.0.0/0.0.0.0"), ("deny", "::/0"), ("permit", "127.0.0.1/255.255.255.255")]
    fields = {k: v for k, v in user if k not in ("deny", "permit")}
    assert fields["secret"] == "CHANGE-ME"
    read = set(fields["read"].split(","))
    write = set(fields["write"].split(","))
    # FullyBooted (system), channels/bridges/MixMonitorStart/CEL (call), queues (agent), VarSet (dialplan)
    assert {"system", "call", "agent", "dialplan"} <= read
    assert "all" not in read
    # QueueAdd/Remove/Pause: agent; Originate: originate; Getvar/Setvar: call; CoreShowChannels: reporting
    assert {"agent", "originate", "call", "reporting"} <= write
    assert not write & {"all", "command", "config", "system"}, "least privilege: no reload/CLI/config"
    assert fields["allowmultiplelogin"] == "yes"


def test_manager_remote_service(tmp_path, big_settings):
    sections = parse(tmp_path, "manager.conf", render_manager(big_settings))
    assert list(sections) == ["general", "hotline-svc"]
    general = keys(sections["general"])
    assert general["port"] == "5039"
    assert general["bindaddr"] == "10.20.0.5"
    acl = [(k, v) for k, v in sections["hotline-svc"] if k in ("deny", "permit")]
    assert acl == [("deny", "0.0.0.0/0.0.0.0"), ("deny", "::/0"), ("permit", "10.20.0.9/255.255.255.255")]


# --------------------------------------------------------------------------- leader hotline


def test_leader_contexts_reach_only_configured_queues_and_seats(tmp_path, big_settings):
    sections = parse(tmp_path, "extensions.conf", render_leader_dialplan(big_settings))
    assert set(sections) == {"hotline-transfer", "hotline-seats", "hotline-callback"}
    # BlindTransfer to hotline-transfer,<queue>: one extension per configured queue, no pattern
    survey = ("same", f"n,{SURVEY_STEP}")  # the seat hung up: the satisfaction survey
    assert sections["hotline-transfer"] == [
        ("exten", "hl-general,1,Queue(${EXTEN},ct,,,150)"), survey, ("same", "n,Hangup()"),
        ("exten", "hl-business,1,Queue(${EXTEN},ct,,,300)"), survey, ("same", "n,Hangup()"),
        ("exten", "hl-dialect,1,Queue(${EXTEN},ct,,,240)"), survey, ("same", "n,Hangup()"),
        ("exten", "hl-leader,1,Queue(${EXTEN},ct,,,600)"), survey, ("same", "n,Hangup()")]
    # Atxfer to hotline-seats,<seat number>: one extension per configured PJSIP seat
    assert [v for k, v in sections["hotline-seats"] if k == "exten"] == [
        f"{n},1,Dial(PJSIP/${{EXTEN}},30)" for n in ("8001", "8002", "8003", "8900")]
    assert not any(v.startswith("_") for _k, v in sections["hotline-transfer"] + sections["hotline-seats"])
    callback = sections["hotline-callback"]
    assert callback[0] == ("exten", "_X.,1,NoOp(Hotline leader callback)")
    steps = [v.split(",", 1)[1] for _k, v in callback]
    assert steps[1] == 'GotoIf($["${REGEX("^[0-9]{3,20}$" ${EXTEN})}" != "1"]?refuse)'
    assert steps[2] == "MixMonitor(/srv/hotline/recordings/${UNIQUEID}.wav,b)"
    assert steps[3] == "Dial(PJSIP/${EXTEN}@hotline-trunk,60)"
    assert callback[-1] == ("same", "n(refuse),Hangup()")
    other = parse(tmp_path, "other.conf", render_leader_dialplan(big_settings, trunk="carrier-b"))
    assert ("same", "n,Dial(PJSIP/${EXTEN}@carrier-b,60)") in other["hotline-callback"]
    with pytest.raises(ValueError, match="trunk"):
        render_leader_dialplan(big_settings, trunk="x,y")


def test_features_conf_has_the_attended_transfer_code(tmp_path, big_settings):
    assert parse(tmp_path, "features.conf", render_features()) == {"featuremap": [("atxfer", "*2")]}
    text = render_all(big_settings)
    assert re.search(r"^; =+ /etc/asterisk/features\.conf ", text, re.M)
    assert "[hotline-transfer]" in text and "[hotline-callback]" in text


# --------------------------------------------------------------------------- all, secrets, errors


def test_render_all_names_the_files_and_parses(tmp_path, big_settings):
    text = render_all(big_settings)
    for name in ("extensions.conf", "queues.conf", "manager.conf"):
        assert re.search(rf"^; =+ /etc/asterisk/{re.escape(name)} ", text, re.M), name
    assert text.index("extensions.conf") < text.index("queues.conf (") < text.index("manager.conf (")
    # The whole output is also readable by pyst2 (only comments, sections and items).
    path = tmp_path / "all.conf"
    path.write_text(text, encoding="utf-8")
    cfg = asterisk.config.Config(str(path))
    assert [c.name for c in cfg.categories].count("general") == 2
    assert "#include" not in text and "(!)" not in text


@pytest.mark.parametrize("fixture", ["default_settings", "big_settings"])
def test_secret_never_printed(request, fixture):
    settings = request.getfixturevalue(fixture)
    outputs = [render_dialplan(settings), render_queues(settings), render_manager(settings), render_all(settings)]
    for out in outputs:
        assert SECRET not in out
    assert "CHANGE-ME" in render_manager(settings)


def test_secret_from_file_never_printed(tmp_path, monkeypatch):
    secret_file = tmp_path / "ami.secret"
    secret_file.write_text("file-secret-7d1e\n")
    monkeypatch.setenv("HOTLINE_AMI__SECRET_FILE", str(secret_file))
    settings = load_settings()
    assert settings.ami.secret.get_secret_value() == "file-secret-7d1e"
    out = render_all(settings)
    assert "file-secret-7d1e" not in out
    assert str(secret_file) not in out


@pytest.mark.parametrize(
    ("mutate", "setting"),
    [
        (lambda s: setattr(s.queues[1], "name", "bad;name"), "queues[1].name"),
        (lambda s: setattr(s.queues[0], "name", "x\n[evil]"), "queues[0].name"),
        (lambda s: setattr(s.queues[1], "name", "general"), "queues[1].name"),
        (lambda s: setattr(s.seats[1], "name", "Seat\r\n[general]"), "seats[1].name"),
        (lambda s: setattr(s.seats[0], "interface", "PJSIP/8001;x"), "seats[0].interface"),
        (lambda s: setattr(s.agi, "advertise_host", "0.0.0.0"), "agi.advertise_host"),
        (lambda s: setattr(s.agi, "advertise_host", "host;name"), "agi.advertise_host"),
        (lambda s: setattr(s.agi, "listen_port", 0), "agi.listen_port"),
        (lambda s: setattr(s, "recordings_dir", Path("/var/spool/rec,b")), "recordings_dir"),
        (lambda s: setattr(s, "recordings_dir", Path("relative/dir")), "recordings_dir"),
        (lambda s: setattr(s.ami, "username", "hot[line"), "ami.username"),
        (lambda s: setattr(s.ami, "port", 80), "ami.port"),
        (lambda s: setattr(s, "node_id", "pbx\n1"), "node_id"),
        (lambda s: setattr(s.ivr, "emergency_dial", "PJSIP/110@trunk,60,tT"), "ivr.emergency_dial"),
        (lambda s: setattr(s.ivr, "emergency_dial", "PJSIP/110@trunk)"), "ivr.emergency_dial"),
        (lambda s: setattr(s.ivr, "emergency_dial", "PJSIP/110\nexten => s,1,System(id)"), "ivr.emergency_dial"),
        (lambda s: setattr(s.ivr, "emergency_dial", "PJSIP/110\r"), "ivr.emergency_dial"),
        (lambda s: setattr(s.ivr, "emergency_dial", "PJSIP/110;x"), "ivr.emergency_dial"),
        (lambda s: setattr(s.ivr, "emergency_dial", "PJSIP/${EXTEN}@trunk"), "ivr.emergency_dial"),
        (lambda s: setattr(s.ivr, "emergency_dial", "110"), "ivr.emergency_dial"),
        (lambda s: setattr(s.ivr, "emergency_ring_seconds", 0), "ivr.emergency_ring_seconds"),
    ],
)
def test_bad_value_raises_naming_it(big_settings, mutate, setting):
    mutate(big_settings)  # pydantic does not re-validate on assignment: the renderer must
    with pytest.raises(ValueError) as info:
        render_all(big_settings)
    assert setting in str(info.value)


def test_bad_did_raises(default_settings):
    with pytest.raises(ValueError, match=r"dids\[0\]"):
        render_dialplan(default_settings, dids=["123;456"])


# --------------------------------------------------------------------------- importer


def test_import_capture_queues_conf():
    queues = import_queues(FIXTURES / "queues.conf")
    assert [q["name"] for q in queues] == ["hotline-general", "hotline-leader"]
    general, leader = queues
    assert (general["strategy"], general["timeout"], general["retry"], general["wrapuptime"]) == ("rrmemory", 8, 1, 2)
    assert general["members"] == []
    assert general["options"]["ringinuse"] == "no"
    assert general["options"]["setqueueentryvar"] == "yes"
    # wrapuptime left out: app_queue's default 0
    assert (leader["strategy"], leader["timeout"], leader["retry"], leader["wrapuptime"]) == ("linear", 10, 1, 0)


def test_import_static_members(tmp_path):
    path = tmp_path / "queues.conf"
    path.write_text(
        "[general]\n"
        "persistentmembers = yes\n"
        "\n"
        "[sales] ; the sales line\n"
        "strategy = fewestcalls\n"
        "member => PJSIP/8001\n"
        "member => PJSIP/8002,5,Seat 8002,Custom:seat8002\n"
        'member = Local/8003@agents/n,0,"Wang, Li",PJSIP/8003,no,10,yes\n'
        "\n"
        "[empty]\n",
        encoding="utf-8",
    )
    sales, empty = import_queues(path)
    assert sales["name"] == "sales"
    assert (sales["strategy"], sales["timeout"], sales["retry"], sales["wrapuptime"]) == ("fewestcalls", 15, 5, 0)
    assert sales["members"] == [
        {"interface": "PJSIP/8001", "penalty": 0, "membername": None, "state_interface": None,
         "ringinuse": None, "wrapuptime": None, "paused": False},
        {"interface": "PJSIP/8002", "penalty": 5, "membername": "Seat 8002", "state_interface": "Custom:seat8002",
         "ringinuse": None, "wrapuptime": None, "paused": False},
        {"interface": "Local/8003@agents/n", "penalty": 0, "membername": "Wang, Li", "state_interface": "PJSIP/8003",
         "ringinuse": False, "wrapuptime": 10, "paused": True},
    ]
    assert empty == {"name": "empty", "strategy": "ringall", "timeout": 15, "retry": 5, "wrapuptime": 0,
                     "members": [], "options": {}}


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("[general]\n\n[tpl](!)\nstrategy = linear\n", 3, "templates"),
        ("[base]\nstrategy = linear\n[q1](base)\ntimeout = 5\n", 3, "templates"),
        ("[general]\n#include queues_custom.conf\n", 2, "#include"),
        ('[general]\n#tryinclude "extra.conf"\n', 2, "#include"),
        ("[q]\nnot a key value line\n", 2, "name = value"),
        ("[q]\ntimeout = soon\n", 2, "not a whole number"),
    ],
)
def test_import_refuses_what_pyst2_cannot_read(tmp_path, text, line, what):
    path = tmp_path / "site-queues.conf"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(QueuesImportError) as info:
        import_queues(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}:"), message
    assert what in message


def test_import_missing_file_names_it(tmp_path):
    path = tmp_path / "nope.conf"
    with pytest.raises(QueuesImportError, match=re.escape(str(path))):
        import_queues(path)


# --------------------------------------------------------------------------- the dialplan, run
#
# A small model of how Asterisk 22 runs the generated [hotline-inbound]: ${VAR} and ${REGEX("re" s)}
# substitution (braces counted as pbx.c does, the innermost value substituted first), $[a = b] and
# $[a != b] on quoted strings, and the applications the snippet uses. It fails loudly on anything
# else, so a change that puts an unchecked value into an expression or argument shows up here.


class _Channel:
    def __init__(self, variables: dict[str, str], agi, survey=None) -> None:
        self.vars = {"UNIQUEID": "1700000000.42", **variables}
        self.agi = agi  # called with the channel when AGI(.../ivr) runs; may set variables or do nothing
        self.survey = survey  # the same for AGI(.../survey)
        self.apps: list[tuple[str, str]] = []

    def subst(self, text: str) -> str:
        out, i = [], 0
        while i < len(text):
            if text.startswith("${", i) or text.startswith("$[", i):
                opener, closer = ("{", "}") if text[i + 1] == "{" else ("[", "]")
                depth, j = 1, i + 2
                while depth:
                    if j >= len(text):
                        raise AssertionError(f"unbalanced {opener} in {text!r}")
                    depth += {opener: 1, closer: -1}.get(text[j], 0)
                    j += 1
                inner = self.subst(text[i + 2:j - 1])
                out.append(self.function_or_var(inner) if opener == "{" else self.expression(inner))
                i = j
            else:
                out.append(text[i])
                i += 1
        return "".join(out)

    def function_or_var(self, inner: str) -> str:
        if "(" not in inner:
            return self.vars.get(inner, "")
        name, args = inner.split("(", 1)
        assert name in ("REGEX", "IF") and args.endswith(")"), inner
        if name == "IF":  # IF(cond?iftrue:iffalse), only in the capture dialplan
            cond, choices = args[:-1].split("?", 1)
            iftrue, _, iffalse = choices.partition(":")
            return iftrue if cond.strip() not in ("", "0") else iffalse
        parts = args[:-1].split('"', 2)
        if len(parts) != 3 or parts[0] != "":
            return ""  # func_strings.c: "Unexpected arguments", the function yields nothing
        subject = parts[2][1:] if parts[2][:1] in (" ", "\t") else parts[2]
        # regcomp(REG_EXTENDED) without REG_NEWLINE: '$' is the end of the string only
        pattern = parts[1][:-1] + r"\Z" if parts[1].endswith("$") else parts[1]
        return "1" if re.search(pattern, subject) else "0"

    @staticmethod
    def expression(inner: str) -> str:
        m = re.fullmatch(r'\s*"([^"]*)"\s*(!?=)\s*"([^"]*)"\s*', inner)
        if m is None:  # arithmetic, only on whole numbers the dialplan itself set (HOTLINE_OVERFLOWS)
            n = re.fullmatch(r"\s*(\d+)\s*(\+|>=)\s*(\d+)\s*", inner)
            assert n, f"unexpected expression: $[{inner}]"
            a, b = int(n.group(1)), int(n.group(3))
            return str(a + b) if n.group(2) == "+" else ("1" if a >= b else "0")
        equal = m.group(1) == m.group(3)
        return "1" if equal == (m.group(2) == "=") else "0"


def run_inbound(text: str, channel: _Channel, statuses: list[str] | None = None, *,
                context: str = "hotline-inbound", exten: str = "12345", dials: list[str] | None = None) -> _Channel:
    """Run ``exten`` of ``context`` until Queue(), Dial() or Hangup(). With ``statuses``, each Queue()
    returns with the next QUEUESTATUS instead and the dialplan goes on; with ``dials`` each Dial()
    with the next DIALSTATUS. Goto/GotoIf may go to a label, or to ``context,exten,priority`` of
    any context in ``text``."""
    extens: dict[tuple[str, str], list[tuple[str | None, str]]] = {}
    for ctx, items in parse_text(text).items():
        current = None
        for kind, value in items:
            if kind not in ("exten", "same"):  # [general]'s static = yes, ...
                continue
            if kind == "exten":
                current, value = value.split(",", 1)
                assert (ctx, current) not in extens, f"extension {current} twice in {ctx}"
                extens[(ctx, current)] = []
            prio, app = value.split(",", 1)
            label = re.fullmatch(r"(?:n|\d+)(?:\((\w+)\))?", prio)
            assert label, prio
            extens[(ctx, current)].append((label.group(1), app))
    labels = {(*key, label): n for key, steps in extens.items() for n, (label, _app) in enumerate(steps) if label}
    statuses = None if statuses is None else list(statuses)
    dials = None if dials is None else list(dials)
    pc, steps = 0, extens[(context, exten)]
    for _ in range(1000):
        if pc >= len(steps):
            break
        app = steps[pc][1]
        pc += 1
        name, data = re.fullmatch(r"(\w+)\((.*)\)", app, re.S).groups()
        channel.vars["EXTEN"] = exten
        data = channel.subst(data)
        while name == "ExecIf":
            cond, then = data.split("?", 1)
            if cond != "1":
                break
            name, data = re.fullmatch(r"(\w+)\((.*)\)", then, re.S).groups()
        if name == "ExecIf":
            continue
        channel.apps.append((name, data))
        if name == "Set":
            var, value = data.split("=", 1)
            channel.vars[var] = value
        elif name in ("GotoIf", "Goto"):
            cond, target = data.split("?", 1) if name == "GotoIf" else ("1", data)
            assert cond in ("0", "1"), data
            if cond == "1":
                parts = target.split(",")
                if len(parts) == 3:
                    context, exten, target = parts
                elif len(parts) == 2:
                    exten, target = parts
                steps = extens[(context, exten)]
                pc = int(target) - 1 if target.isdigit() else labels[(context, exten, target)]
        elif name == "AGI":
            script = data.rsplit("/", 1)[1]
            assert script in ("ivr", "survey"), data
            hook = channel.agi if script == "ivr" else channel.survey
            if hook is not None:
                hook(channel)
        elif name == "Queue" and statuses is not None:
            channel.vars["QUEUESTATUS"] = statuses.pop(0)
        elif name == "Dial" and dials is not None:
            channel.vars["DIALSTATUS"] = dials.pop(0)
        elif name in ("Queue", "Dial", "Hangup"):
            return channel
        else:
            assert name in ("NoOp", "Answer", "MixMonitor"), name
    raise AssertionError("the dialplan ran out without Queue() or Hangup(): dead air (or looped)")


def parse_text(text: str) -> dict[str, list[tuple[str, str]]]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return parse(Path(tmp), "extensions.conf", text)


def ivr_sets(**variables: str):
    def agi(channel: _Channel) -> None:
        channel.vars.update(variables)
    return agi


def unreachable(channel: _Channel) -> None:
    channel.vars["AGISTATUS"] = "FAILURE"


def queue_call(channel: _Channel) -> list[str]:
    name, data = channel.apps[-1]
    assert name == "Queue", channel.apps
    mixmonitor = [d for n, d in channel.apps if n == "MixMonitor"]
    assert mixmonitor == ["/srv/hotline/recordings/1700000000.42.wav,b"], "recording starts before the queue"
    return data.split(",")


def test_dialplan_routes_the_ivr_choice(big_settings):
    text = render_dialplan(big_settings)
    ch = run_inbound(text, _Channel({}, ivr_sets(HOTLINE_QUEUE="hl-business", HOTLINE_QUEUE_TIMEOUT="300",
                                                 HOTLINE_CATEGORY="business_environment")))
    assert queue_call(ch) == ["hl-business", "ct", "", "", "300"]
    assert ch.vars["HOTLINE_CATEGORY"] == "business_environment"
    # A queue without a timeout from the service gets its own max wait.
    ch = run_inbound(text, _Channel({}, ivr_sets(HOTLINE_QUEUE="hl-dialect")))
    assert queue_call(ch) == ["hl-dialect", "ct", "", "", "240"]


@pytest.mark.parametrize(
    "agi",
    [unreachable, ivr_sets(HOTLINE_QUEUE="nosuch", HOTLINE_CATEGORY="x"), ivr_sets(HOTLINE_QUEUE=""),
     ivr_sets(HOTLINE_QUEUE="HL-GENERAL"), ivr_sets(HOTLINE_QUEUE="hl-general|hl-leader"),
     ivr_sets(HOTLINE_QUEUE="hl-leader,t,,,1"), ivr_sets(HOTLINE_QUEUE='hl-leader" x'),
     ivr_sets(HOTLINE_QUEUE='hl-leader")}"]?Hangup()'), ivr_sets(HOTLINE_QUEUE="hl-leader\nx"),
     ivr_sets(HOTLINE_QUEUE="${HOTLINE_CATEGORY}")],
)
def test_dialplan_falls_back_to_the_default_queue(big_settings, agi):
    """Service down, unknown or crafted queue name: the default queue, its category and max wait."""
    ch = run_inbound(render_dialplan(big_settings), _Channel({}, agi))
    assert queue_call(ch) == ["hl-general", "ct", "", "", "150"]
    assert ch.vars["HOTLINE_CATEGORY"] == "general"


def test_dialplan_ignores_variables_from_before_the_ivr(big_settings):
    """A channel transferred back into 12345 keeps its variables; the IVR's failure must not reuse them."""
    stale = {"HOTLINE_QUEUE": "hl-leader", "HOTLINE_QUEUE_TIMEOUT": "5", "HOTLINE_PRIORITY": "9"}
    ch = run_inbound(render_dialplan(big_settings), _Channel(stale, unreachable))
    assert queue_call(ch) == ["hl-general", "ct", "", "", "150"]
    assert "QUEUE_PRIO" not in ch.vars


@pytest.mark.parametrize(
    ("timeout", "priority", "queue_timeout", "prio"),
    [("45", "3", "45", "3"), ("0", "", "150", None), ("10,,x", "1,2", "150", None), ("12345", "1000", "150", None),
     ("${X}", "-1", "150", None), ("9999", "999", "9999", "999")],
)
def test_dialplan_checks_timeout_and_priority(big_settings, timeout, priority, queue_timeout, prio):
    agi = ivr_sets(HOTLINE_QUEUE="hl-general", HOTLINE_QUEUE_TIMEOUT=timeout, HOTLINE_PRIORITY=priority)
    ch = run_inbound(render_dialplan(big_settings), _Channel({}, agi))
    assert queue_call(ch) == ["hl-general", "ct", "", "", queue_timeout]
    assert ch.vars.get("QUEUE_PRIO") == prio


def test_dialplan_model_matches_the_capture_dialplan():
    """The model runs the dialplan that produced the captures the same way Asterisk did (answered.ami:
    Queue(hotline-general,t,,,60) after the IVR set HOTLINE_QUEUE without a timeout)."""
    text = (FIXTURES / "extensions.conf").read_text().replace("@AGIPORT@", "4573")
    ch = run_inbound(text, _Channel({}, ivr_sets(HOTLINE_QUEUE="hotline-general")))
    assert ch.apps[-1] == ("Queue", "hotline-general,t,,,60")
    ch = run_inbound(text, _Channel({}, unreachable))
    assert ch.apps[-1] == ("Hangup", "")


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("[q]\n;-- old members\nmember => PJSIP/9999\n--;\n", 2, "block comments"),
        ("[q]\nmember => PJSIP/1,0,Wang\\; Li\n", 2, "escaped ';'"),
        ("strategy = linear\n[q]\n", 1, "before the first [section]"),
    ],
)
def test_import_refuses_what_pyst2_would_read_wrongly(tmp_path, text, line, what):
    path = tmp_path / "site-queues.conf"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(QueuesImportError) as info:
        import_queues(path)
    assert str(info.value).startswith(f"{path}:{line}:") and what in str(info.value), str(info.value)


def test_import_plain_dashed_comment_is_fine(tmp_path):
    path = tmp_path / "queues.conf"
    path.write_text(";------ Hotline queues ------\n[q]\nstrategy = linear ;--- a note\n", encoding="utf-8")
    (q,) = import_queues(path)
    assert (q["name"], q["strategy"]) == ("q", "linear")


def test_bad_strategy_and_category_raise_naming_them(big_settings):
    big_settings.queues[2].strategy = "roundrobin"
    with pytest.raises(ValueError, match=r"queues\[2\]\.strategy"):
        render_queues(big_settings)
    big_settings.queues[2].strategy = "linear"
    big_settings.queues[0].category = "x)\nexten => s,1,System(id)"
    with pytest.raises(ValueError, match=r"queues\[0\]\.category"):
        render_dialplan(big_settings)


# --------------------------------------------------------------------------- overflow


@pytest.fixture
def overflow_settings(big_settings):
    """hl-dialect overflows into hl-business, which overflows into hl-general."""
    big_settings.queues[2].overflow = "hl-business"
    big_settings.queues[1].overflow = "hl-general"
    return big_settings


def queues_run(channel: _Channel) -> list[list[str]]:
    return [data.split(",") for name, data in channel.apps if name == "Queue"]


def test_dialplan_overflow_parses_and_reads_only_checked_values(tmp_path, overflow_settings):
    text = render_dialplan(overflow_settings)
    sections = parse(tmp_path, "extensions.conf", text)
    steps = dialplan_steps(sections["hotline-inbound"])
    raw = [v for _k, v in sections["hotline-inbound"]]
    queue_at = steps.index("Queue(${HOTLINE_QUEUE},ct,,,${HOTLINE_QUEUE_TIMEOUT})")
    assert steps[queue_at - 1] == "Set(HOTLINE_OVERFLOWS=0)"  # after the IVR: the service cannot preset it
    assert any(v.startswith("n(in_queue),Queue(") for v in raw)
    assert steps[queue_at + 1:queue_at + 3] == ["NoOp(Hotline queue exit ${QUEUESTATUS})", SURVEY_STEP]
    tail = steps[queue_at + 3:]
    assert tail[:2] == ['GotoIf($["${QUEUESTATUS}" != "TIMEOUT"]?queue_done)',
                        "GotoIf($[${HOTLINE_OVERFLOWS} >= 2]?queue_done)"]  # two queues overflow: two hops
    tail = ["(the NoOp above)", *tail]
    assert tail[3:5] == ['GotoIf($["${HOTLINE_QUEUE}" = "hl-business"]?overflow_1)',
                         'GotoIf($["${HOTLINE_QUEUE}" = "hl-dialect"]?overflow_2)']
    assert tail[5] == "Hangup()" and any(v.startswith("n(queue_done),Hangup()") for v in raw)
    assert tail[6:12] == ["NoOp(Hotline overflow hl-business to hl-general)", "Set(HOTLINE_QUEUE=hl-general)",
                          "Set(HOTLINE_QUEUE_TIMEOUT=150)", "Set(HOTLINE_CATEGORY=general)",
                          "Set(HOTLINE_OVERFLOWS=$[${HOTLINE_OVERFLOWS} + 1])", "Goto(in_queue)"]
    assert tail[12:18] == ["NoOp(Hotline overflow hl-dialect to hl-business)", "Set(HOTLINE_QUEUE=hl-business)",
                         "Set(HOTLINE_QUEUE_TIMEOUT=300)", "Set(HOTLINE_CATEGORY=business_environment)",
                         "Set(HOTLINE_OVERFLOWS=$[${HOTLINE_OVERFLOWS} + 1])", "Goto(in_queue)"]
    # HOTLINE_QUEUE is read only in the whitelist, comparisons with a configured name, and Queue().
    for step in steps:
        if "${HOTLINE_QUEUE}" in step:
            assert step.startswith(("GotoIf(", "ExecIf(", "Queue(")), step
    assert "CALLERID" not in text
    # Without any overflow the dialplan is the plain one (no counter, no labels for it).
    overflow_settings.queues[1].overflow = overflow_settings.queues[2].overflow = None
    assert "OVERFLOW" not in render_dialplan(overflow_settings)


def test_dialplan_overflow_runs_the_chain(overflow_settings):
    text = render_dialplan(overflow_settings)
    agi = ivr_sets(HOTLINE_QUEUE="hl-dialect", HOTLINE_QUEUE_TIMEOUT="45", HOTLINE_CATEGORY="dialect")
    # timed out in hl-dialect (the IVR's 45 s), then hl-business, then answered in hl-general
    ch = run_inbound(text, _Channel({}, agi), ["TIMEOUT", "TIMEOUT", "CONTINUE"])
    assert queues_run(ch) == [["hl-dialect", "ct", "", "", "45"], ["hl-business", "ct", "", "", "300"],
                              ["hl-general", "ct", "", "", "150"]]
    assert ch.apps[-1] == ("Hangup", "")
    assert (ch.vars["HOTLINE_QUEUE"], ch.vars["HOTLINE_CATEGORY"], ch.vars["HOTLINE_OVERFLOWS"]) == \
        ("hl-general", "general", "2")
    # a caller who hung up (no QUEUESTATUS), left any other way, or talked to a seat is not sent on
    for status in ("", "FULL", "CONTINUE"):
        ch = run_inbound(text, _Channel({}, agi), [status])
        assert len(queues_run(ch)) == 1 and ch.apps[-1] == ("Hangup", "")
        assert (("AGI", "agi://10.20.0.9:4600/survey") in ch.apps) == (status == "CONTINUE")
    # the end of the chain: a timeout in hl-general has nowhere to go
    ch = run_inbound(text, _Channel({}, ivr_sets(HOTLINE_QUEUE="hl-general")), ["TIMEOUT"])
    assert queues_run(ch) == [["hl-general", "ct", "", "", "150"]] and ch.apps[-1] == ("Hangup", "")
    # the IVR cannot preset the counter to skip the overflow, nor a crafted queue name reach it
    agi = ivr_sets(HOTLINE_QUEUE="hl-business", HOTLINE_OVERFLOWS="9")
    ch = run_inbound(text, _Channel({}, agi), ["TIMEOUT", "TIMEOUT"])
    assert [q[0] for q in queues_run(ch)] == ["hl-business", "hl-general"]
    ch = run_inbound(text, _Channel({}, ivr_sets(HOTLINE_QUEUE='hl-business" = "hl-business')), ["TIMEOUT"])
    assert [q[0] for q in queues_run(ch)] == ["hl-general"]


def test_dialplan_overflow_hops_are_bounded_even_in_a_loop(overflow_settings):
    """The settings refuse loops; if one slipped into the dialplan, the counter still ends it."""
    text = render_dialplan(overflow_settings)
    # make hl-business overflow back into hl-dialect: a loop the generator would refuse
    looped = text.replace("Set(HOTLINE_QUEUE=hl-general)", "Set(HOTLINE_QUEUE=hl-dialect)")
    ch = run_inbound(looped, _Channel({}, ivr_sets(HOTLINE_QUEUE="hl-dialect")), ["TIMEOUT"] * 10)
    assert [q[0] for q in queues_run(ch)] == ["hl-dialect", "hl-business", "hl-dialect"]
    assert ch.apps[-1] == ("Hangup", "")


@pytest.mark.parametrize(
    ("overflows", "setting"),
    [({1: "nosuch"}, r"queues\[1\]\.overflow"), ({1: "hl-business"}, r"queues\[1\]\.overflow.*loop"),
     ({1: "hl-dialect", 2: "hl-business"}, r"queues\[1\]\.overflow.*loop"),
     ({0: "hl-x)\nexten => s,1,System(id)"}, r"queues\[0\]\.overflow")],
)
def test_dialplan_refuses_bad_overflow(big_settings, overflows, setting):
    for index, target in overflows.items():
        big_settings.queues[index].overflow = target  # past the settings' own checks
    with pytest.raises(ValueError, match=setting):
        render_dialplan(big_settings)
    with pytest.raises(ValueError, match=setting):
        render_leader_dialplan(big_settings)


def test_transfer_context_overflows_too(tmp_path, overflow_settings):
    text = render_leader_dialplan(overflow_settings)
    sections = parse(tmp_path, "extensions.conf", text)
    transfer = sections["hotline-transfer"]
    assert transfer[:4] == [("exten", "hl-general,1,Set(HOTLINE_OVERFLOWS=0)"),
                            ("same", "n(in_queue),Queue(${EXTEN},ct,,,150)"), ("same", f"n,{SURVEY_STEP}"),
                            ("same", "n,Hangup()")]
    assert not any(v.startswith("_") for _k, v in transfer)  # still one extension per queue, no pattern
    # a blind transfer into hl-dialect: its max wait, then on to hl-business and hl-general
    ch = run_inbound(text, _Channel({"HOTLINE_OVERFLOWS": "1"}, None), ["TIMEOUT", "TIMEOUT", "TIMEOUT"],
                     context="hotline-transfer", exten="hl-dialect")
    assert queues_run(ch) == [["hl-dialect", "ct", "", "", "240"], ["hl-business", "ct", "", "", "300"],
                              ["hl-general", "ct", "", "", "150"]]
    assert (ch.vars["HOTLINE_QUEUE"], ch.vars["HOTLINE_CATEGORY"]) == ("hl-general", "general")
    assert ch.apps[-1] == ("Hangup", "")
    # answered (or hung up) in the first queue: no overflow
    ch = run_inbound(text, _Channel({}, None), [""], context="hotline-transfer", exten="hl-business")
    assert len(queues_run(ch)) == 1 and ch.apps[-1] == ("Hangup", "")


# --------------------------------------------------------------------------- the IVR's other endings


SURVEY_URL = "agi://10.20.0.9:4600/survey"


def survey_sets(value: str | None):
    """The survey's FastAGI session: sets HOTLINE_SURVEY (None: the service is down, sets nothing)."""
    def survey(channel: _Channel) -> None:
        if value is not None:
            channel.vars["HOTLINE_SURVEY"] = value
    return survey


def app_names(channel: _Channel) -> list[str]:
    return [name for name, _data in channel.apps]


EMERGENCY = {"HOTLINE_IVR_CHOICE": "9-transfer_yes", "HOTLINE_TRANSFER": "110", "HOTLINE_CATEGORY": "general",
             "HOTLINE_QUEUE_TIMEOUT": "150", "HOTLINE_PRIORITY": "0", "HOTLINE_QUEUE": "hl-general"}


@pytest.mark.ivr
def test_dialplan_emergency_transfer_dials_110_recorded(big_settings):
    text = render_dialplan(big_settings)
    ch = run_inbound(text, _Channel({}, ivr_sets(**EMERGENCY)), dials=["ANSWER"])
    names = app_names(ch)
    assert ("Dial", "PJSIP/110@hotline-trunk,30") in ch.apps
    assert ("MixMonitor", "/srv/hotline/recordings/1700000000.42.wav,b") in ch.apps
    assert names.index("MixMonitor") < names.index("Dial")
    assert ch.apps[-1] == ("Hangup", "") and "Queue" not in names and "AGI" not in names[names.index("Dial"):]
    # 110 not reached in time, busy, trunk down: the queue the IVR named, recorded once (queue_call)
    for status in ("NOANSWER", "BUSY", "CONGESTION", "CHANUNAVAIL", "CANCEL", ""):
        ch = run_inbound(text, _Channel({}, ivr_sets(**EMERGENCY)), dials=[status])
        assert queue_call(ch) == ["hl-general", "ct", "", "", "150"]
        assert app_names(ch).count("Dial") == 1
    # ... and a queue name the whitelist refuses still ends in the default queue
    ch = run_inbound(text, _Channel({}, ivr_sets(HOTLINE_TRANSFER="110", HOTLINE_QUEUE="hl-x")), dials=["NOANSWER"])
    assert queue_call(ch) == ["hl-general", "ct", "", "", "150"] and ch.vars["HOTLINE_CATEGORY"] == "general"
    # the queue after a failed 110 dial: a seat that hangs up leads to the survey as for any call
    ch = run_inbound(text, _Channel({}, ivr_sets(**EMERGENCY), survey_sets("satisfied")), ["CONTINUE"],
                     dials=["NOANSWER"])
    assert app_names(ch)[-4:] == ["GotoIf", "NoOp", "AGI", "Hangup"] and ch.vars["HOTLINE_SURVEY"] == "satisfied"


@pytest.mark.ivr
def test_dialplan_emergency_trunk_and_ring_time_come_from_the_settings(tmp_path, big_settings):
    big_settings.ivr.emergency_dial = "PJSIP/0110@carrier-b&PJSIP/110@carrier-c"
    big_settings.ivr.emergency_ring_seconds = 20
    text = render_dialplan(big_settings)
    parse(tmp_path, "extensions.conf", text)  # pyst2 reads it
    ch = run_inbound(text, _Channel({}, ivr_sets(**EMERGENCY)), dials=["ANSWER"])
    assert ("Dial", "PJSIP/0110@carrier-b&PJSIP/110@carrier-c,20") in ch.apps


@pytest.mark.ivr
@pytest.mark.parametrize("transfer", ["119", "120", "122", "0110", "1100", "110 ", " 110", "110\n", '110" = "110',
                                      "110|119", "${X}", "1?emergency", ""])
def test_dialplan_honours_only_the_literal_110(big_settings, transfer):
    agi = ivr_sets(HOTLINE_TRANSFER=transfer, HOTLINE_QUEUE="hl-business")
    ch = run_inbound(render_dialplan(big_settings), _Channel({"X": "110"}, agi))
    assert "Dial" not in app_names(ch)
    assert queue_call(ch)[0] == "hl-business"


@pytest.mark.ivr
def test_dialplan_callback_request_hangs_up_without_queue_or_recording(big_settings):
    text = render_dialplan(big_settings)
    agi = ivr_sets(HOTLINE_IVR_CHOICE="1-callback_yes", HOTLINE_CALLBACK_REQUESTED="1", HOTLINE_CATEGORY="general",
                   HOTLINE_QUEUE_TIMEOUT="150", HOTLINE_QUEUE="hl-general")
    ch = run_inbound(text, _Channel({}, agi))
    assert ch.apps[-2:] == [("NoOp", "Hotline callback requested"), ("Hangup", "")]
    assert not {"Queue", "MixMonitor", "Dial"} & set(app_names(ch))
    # only the literal 1; anything else is a plain queue call
    for value in ("0", "2", "11", "1 ", "yes", "", '1" = "1'):
        ch = run_inbound(text, _Channel({}, ivr_sets(HOTLINE_CALLBACK_REQUESTED=value, HOTLINE_QUEUE="hl-business")))
        assert queue_call(ch)[0] == "hl-business"


@pytest.mark.ivr
def test_dialplan_clears_a_stale_transfer_or_callback_request(big_settings):
    """A channel sent back into 12345 keeps its variables: without the IVR they must not act."""
    stale = {"HOTLINE_CALLBACK_REQUESTED": "1", "HOTLINE_TRANSFER": "110"}
    ch = run_inbound(render_dialplan(big_settings), _Channel(stale, unreachable))
    assert queue_call(ch) == ["hl-general", "ct", "", "", "150"] and "Dial" not in app_names(ch)


@pytest.mark.ivr
def test_dialplan_survey_only_after_a_seat_hung_up(big_settings):
    text = render_dialplan(big_settings)
    agi = ivr_sets(HOTLINE_QUEUE="hl-business")
    ch = run_inbound(text, _Channel({}, agi, survey_sets("basically_satisfied")), ["CONTINUE"])
    assert ch.apps[-3:] == [("NoOp", "Hotline satisfaction survey"), ("AGI", SURVEY_URL), ("Hangup", "")]
    assert ch.vars["HOTLINE_SURVEY"] == "basically_satisfied"
    # no seat ever answered (a timeout, the queue refusing the caller): no survey
    for status in ("TIMEOUT", "FULL", "JOINEMPTY", "LEAVEEMPTY", "", "CONTINUE ", "XCONTINUE"):
        ch = run_inbound(text, _Channel({}, agi, survey_sets("satisfied")), [status])
        assert app_names(ch).count("AGI") == 1  # the IVR's only
        assert not ch.vars.get("HOTLINE_SURVEY") and ch.apps[-1] == ("Hangup", "")
    # the survey's service is down: the call still ends
    ch = run_inbound(text, _Channel({}, agi, survey_sets(None)), ["CONTINUE"])
    assert ch.apps[-2:] == [("AGI", SURVEY_URL), ("Hangup", "")] and not ch.vars.get("HOTLINE_SURVEY")


@pytest.mark.ivr
def test_dialplan_survey_after_a_transfer_too(tmp_path, big_settings):
    text = render_dialplan(big_settings) + render_leader_dialplan(big_settings)
    parse(tmp_path, "extensions.conf", text)  # both snippets in one extensions.conf
    ch = run_inbound(text, _Channel({}, None, survey_sets("dissatisfied")), ["CONTINUE"],
                     context="hotline-transfer", exten="hl-leader")
    assert ch.apps[0] == ("Queue", "hl-leader,ct,,,600")
    assert ch.apps[-2:] == [("AGI", SURVEY_URL), ("Hangup", "")] and ch.vars["HOTLINE_SURVEY"] == "dissatisfied"
    ch = run_inbound(text, _Channel({}, None, survey_sets("dissatisfied")), ["TIMEOUT"],
                     context="hotline-transfer", exten="hl-leader")
    assert "AGI" not in app_names(ch) and ch.apps[-1] == ("Hangup", "")
