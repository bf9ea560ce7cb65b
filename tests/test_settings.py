"""Settings: environment over the TOML file over defaults; clear errors; secrets never printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import ConfigError, load_settings

EXAMPLE = Path(__file__).parent.parent / "config.example.toml"


def test_example_file_loads():
    s = load_settings(EXAMPLE)
    assert s.node_id == "pbx1"
    assert [q.name for q in s.queues] == ["hotline-general", "hotline-business"]
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
        ("[ivr]\nroutes = { '12' = 'hotline-general' }", "ivr.routes"),
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
