"""Settings: environment over the TOML file over defaults; clear errors; secrets never printed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from config.settings import ConfigError, load_settings

EXAMPLE = Path(__file__).parent.parent / "config.example.toml"


@pytest.fixture(autouse=True)
def _no_hotline_environment(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith("HOTLINE_"):
            monkeypatch.delenv(name)


def test_example_file_loads():
    s = load_settings(EXAMPLE)
    assert s.node_id == "pbx1"
    assert [q.name for q in s.queues] == ["hotline-general", "hotline-business", "hotline-dialect"]
    assert s.seats[1].penalty == 1 and s.agi.advertise_host == "10.0.0.5"


def test_environment_wins_over_file(monkeypatch):
    monkeypatch.setenv("HOTLINE_NODE_ID", "pbx7")
    monkeypatch.setenv("HOTLINE_AMI__PORT", "5039")
    monkeypatch.setenv("HOTLINE_AMI__SECRET", "top-secret-value")
    s = load_settings(EXAMPLE)
    assert s.node_id == "pbx7" and s.ami.port == 5039 and s.ami.username == "hotline"
    assert s.ami.secret.get_secret_value() == "top-secret-value"
    assert "top-secret-value" not in repr(s) and "top-secret-value" not in s.model_dump_json()


def test_secret_from_file(monkeypatch, tmp_path):
    secret = tmp_path / "ami.secret"
    secret.write_text("from-a-file\n")
    monkeypatch.setenv("HOTLINE_AMI__SECRET_FILE", str(secret))
    assert load_settings().ami.secret.get_secret_value() == "from-a-file"


@pytest.mark.parametrize(
    "content, needle",
    [
        ("node_id = 'a b'", "node_id"),
        ("[ami]\nport = 99999", "ami.port"),
        ("[[seats]]\ninterface = 'PJSIP/1'\nname = 'S1'\nqueues = ['nope']", "seats[0].queues"),
        ("[ivr]\nroutes = { '1' = 'hotline-general' }", "ivr.routes is no longer read"),
        ("node_id = ", "not valid TOML"),
        ("unknown_key = 1", "unknown_key"),
    ],
)
def test_bad_files_name_the_problem(tmp_path, content, needle):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_settings("/nonexistent/hotline.toml")


def test_environment_merges_into_file_tables(monkeypatch, tmp_path):
    path = tmp_path / "site.toml"
    path.write_text("[ami]\nhost = '10.1.1.1'\nusername = 'svc'\n")
    monkeypatch.setenv("HOTLINE_AMI__PORT", "5039")
    s = load_settings(path)
    assert (s.ami.host, s.ami.username, s.ami.port) == ("10.1.1.1", "svc", 5039)


def test_secrets_never_in_repr_str_or_dump(monkeypatch):
    monkeypatch.setenv("HOTLINE_AMI__SECRET", "ami-pass-4411")
    monkeypatch.setenv("HOTLINE_DATABASE_URL", "postgresql://hl:db-pass-8812@db:5432/hotline")
    monkeypatch.setenv("HOTLINE_REDIS_URL", "redis://:redis-pass-2299@cache:6379/0")
    s = load_settings()
    shown = " ".join([repr(s), str(s), repr(s.ami), str(s.ami), s.model_dump_json(), str(s.model_dump())])
    for secret in ("ami-pass-4411", "db-pass-8812", "redis-pass-2299"):
        assert secret not in shown


def test_error_message_never_echoes_a_secret(monkeypatch):
    monkeypatch.setenv("HOTLINE_AMI__SECRET", "ami-pass-4411")
    monkeypatch.setenv("HOTLINE_DATABASE_URL", "postgresql://hl:db-pass-8812@db:5432/hotline")
    monkeypatch.setenv("HOTLINE_AMI__PORT", "ami-pass-4411")  # a secret pasted into the wrong variable
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "ami.port" in str(err.value) and "HOTLINE_AMI__PORT" in str(err.value)
    assert "pass" not in str(err.value)


def test_empty_secret_is_no_secret(monkeypatch, tmp_path):
    monkeypatch.setenv("HOTLINE_AMI__SECRET", "")
    assert load_settings().ami.secret is None
    empty = tmp_path / "empty.secret"
    empty.write_text("\n")
    monkeypatch.setenv("HOTLINE_AMI__SECRET_FILE", str(empty))
    with pytest.raises(ConfigError, match=r"ami\.secret_file is empty"):
        load_settings()
    monkeypatch.setenv("HOTLINE_AMI__SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"ami\.secret_file cannot be read"):
        load_settings()


@pytest.mark.parametrize(
    "content, needle",
    [
        ("timezone = 'Mars/Olympus'", "timezone"),
        ("[[queues]]\nname = 'general'", "queues.0.name"),
        ("[[queues]]\nname = 'hotline-general'\ncategory = 'a b'", "queues.0.category"),
        ("[[queues]]\nname = 'hotline-general'\n[[queues]]\nname = 'Hotline-General'", "queues[1].name"),
        ("[ivr]\ngreeting = 'hotline/welcome'", "ivr.greeting is no longer read"),
        ("[callbacks]\nmax_attempts = 0", "callbacks.max_attempts"),
        ("[ami]\nusername = 'hot line'", "ami.username"),
        ("[ami]\nusername = 'general'", "ami.username"),
        ("_env_file = '/etc/passwd'", "_env_file"),
        ("strategy = 'ringall'", "strategy"),
    ],
)
def test_bad_values_name_the_key(tmp_path, content, needle):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_environment_not_json_is_a_config_error(monkeypatch):
    monkeypatch.setenv("HOTLINE_QUEUES", "hotline-general")
    with pytest.raises(ConfigError, match='"queues".*JSON'):
        load_settings()


def test_unreadable_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(tmp_path)  # a directory
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes("node_id = 'caf\xe9'\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(latin1)


def test_example_file_shows_every_key():
    """The README says config.example.toml shows every key (secrets only as comments)."""
    from config.settings import (AgiSettings, AmiSettings, CallbackSettings, HttpSettings, IvrMenuSettings,
                                 QueueConfig, SeatConfig, Settings)

    text = EXAMPLE.read_text()
    for model in (Settings, AmiSettings, AgiSettings, HttpSettings, IvrMenuSettings, CallbackSettings, QueueConfig,
                  SeatConfig):
        for name in model.model_fields:
            if name in ("ami", "agi", "http", "ivr", "callbacks", "queues", "seats", "secret"):
                continue
            assert f"{name} = " in text, f"{model.__name__}.{name} missing from config.example.toml"
    assert "secret = " not in text and "HOTLINE_AMI__SECRET" in text  # never a secret value in the file


QUEUES_ABC = "[ivr]\ndefault_queue = 'a'\n" + "".join(
    f"[[queues]]\nname = '{name}'\n" for name in ("a", "b", "c"))


@pytest.mark.parametrize(
    "overflows, message",
    [
        ({"b": "x"}, "queues[1].overflow names unknown queue 'x'"),
        ({"c": "A"}, "queues[2].overflow names unknown queue 'A'"),  # exact name, as the dialplan checks it
        ({"b": "b"}, "queues[1].overflow names the queue itself ('b')"),
        ({"a": "b", "b": "a"}, "queues[0].overflow makes an overflow loop: a -> b -> a"),
        ({"a": "b", "b": "c", "c": "b"}, "queues[1].overflow makes an overflow loop: b -> c -> b"),
        ({"a": "c x"}, "queues.0.overflow"),
    ],
)
def test_bad_overflow_names_the_key(tmp_path, overflows, message):
    path = tmp_path / "overflow.toml"
    text = QUEUES_ABC
    for name, target in overflows.items():
        text = text.replace(f"name = '{name}'\n", f"name = '{name}'\noverflow = '{target}'\n")
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_overflow_chain_without_loop_loads(tmp_path):
    path = tmp_path / "overflow.toml"
    path.write_text(QUEUES_ABC.replace("name = 'c'\n", "name = 'c'\noverflow = 'b'\n")
                    .replace("name = 'b'\n", "name = 'b'\noverflow = 'a'\n"))
    s = load_settings(path)
    assert [(q.name, q.overflow) for q in s.queues] == [("a", None), ("b", "a"), ("c", "b")]
    assert load_settings(EXAMPLE).queue("hotline-business").overflow == "hotline-general"
