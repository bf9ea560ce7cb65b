"""The hotline command as a user runs it: clear errors, exit codes, no secret in any output."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "hotline.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=60)


def test_asterisk_config_prints_all_three_files_without_the_secret():
    out = run("asterisk-config", "--no-database", env={"HOTLINE_AMI__SECRET": "never-print-me-123"})
    assert out.returncode == 0, out.stderr
    for needle in ("[hotline-inbound]", "AGI(agi://", "Queue(", "[hotline-general]", "timestampevents = yes"):
        assert needle in out.stdout
    assert "never-print-me-123" not in out.stdout + out.stderr


def test_bad_config_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[ami]\nport = 'five'\n")
    out = run("--config", str(bad), "migrate")
    assert out.returncode == 2
    assert "ami.port" in out.stderr and str(bad) in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("args, needle", [(("demo", "--calls", "0"), "at least 1"),
                                          (("demo", "--speed", "fast"), "not a number"),
                                          (("nosuch",), "invalid choice")])
def test_bad_arguments_name_the_problem(args, needle):
    out = run(*args)
    assert out.returncode == 2 and needle in out.stderr


def test_serve_without_secret_refuses_with_a_message():
    out = run("serve")
    assert out.returncode == 1
    assert "HOTLINE_AMI__SECRET" in out.stderr and "Traceback" not in out.stderr


def test_migrate_against_the_test_database(pg_dsn):
    out = run("migrate", env={"HOTLINE_DATABASE_URL": pg_dsn})
    assert out.returncode == 0, out.stderr
    assert "schema up to date" in out.stdout


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (("--config", "/"), {}, "cannot be read"),
        ((), {"HOTLINE_QUEUES": "hotline-general"}, '"queues"'),
        ((), {"HOTLINE_AMI__PORT": "5o38"}, "HOTLINE_AMI__PORT"),
    ],
)
def test_settings_errors_are_one_message_not_a_traceback(args, env, needle):
    out = run(*args, "asterisk-config", env=env)
    assert out.returncode == 2, out.stderr
    assert needle in out.stderr and "Traceback" not in out.stderr
    assert out.stdout == ""


def test_asterisk_config_refuses_a_value_that_cannot_go_into_the_dialplan():
    out = run("asterisk-config", "--no-database", env={"HOTLINE_AGI__ADVERTISE_HOST": "0.0.0.0"})
    assert out.returncode == 1
    assert "agi.advertise_host" in out.stderr and "Traceback" not in out.stderr
    assert out.stdout == ""


def test_migrate_with_a_wrong_role_names_it_without_the_password(pg_dsn):
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(pg_dsn)
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    dsn = urlunsplit((parts.scheme, f"no_such_role_x:pw-never-shown-77@{host}", parts.path, "", ""))
    out = run("migrate", env={"HOTLINE_DATABASE_URL": dsn})
    assert out.returncode == 1
    assert "no_such_role_x" in out.stderr and "Traceback" not in out.stderr
    assert "pw-never-shown-77" not in out.stdout + out.stderr


@pytest.mark.ivr
def test_prompts_build_creates_the_flows_missing_sounds_and_keeps_recordings(tmp_path, pg_dsn, pg_pool):
    # pg_pool: the run's database emptied, so no flow another test saved is live
    from ivr.prompts import check_wav

    sounds = tmp_path / "sounds"
    (sounds / "hotline").mkdir(parents=True)
    studio = sounds / "hotline" / "welcome.wav"
    studio.write_bytes(b"studio recording")           # a site's own recording is never replaced
    out = run("prompts", "build", "--sounds-dir", str(sounds), env={"HOTLINE_DATABASE_URL": pg_dsn})
    assert out.returncode == 0, out.stderr
    assert any(line.startswith("kept") and "hotline/welcome" in line for line in out.stdout.splitlines())
    assert studio.read_bytes() == b"studio recording"
    menu = check_wav(sounds / "hotline" / "menu.wav")
    assert (menu.rate, menu.channels, menu.bits) == (8000, 1, 16) and menu.seconds > 1


def test_prompts_build_names_a_bad_sounds_dir():
    out = run("prompts", "build", "--no-database", "--sounds-dir", "/proc/no/such/dir")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "FAILED prompt 'hotline/welcome'" in out.stdout and "/proc/no/such/dir" in out.stdout


@pytest.mark.e2e
def test_the_demo_runs_calls_through_the_simulator_into_postgres(pg_dsn, tmp_path):
    """The README's first command, as a user runs it (here on the test database)."""
    import json

    env = {"HOTLINE_DATABASE_URL": pg_dsn}
    out = subprocess.run([sys.executable, "-m", "hotline.cli", "demo", "--calls", "12", "--speed", "40", "--seed", "5"],
                         capture_output=True, text=True, env={**{k: v for k, v in os.environ.items()
                                                                 if not k.startswith("HOTLINE_")}, **env},
                         timeout=110, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["calls"] == 12 and summary["calls_without_order"] == 0
    assert summary["answered"] + summary["abandoned"] + summary["ivr_hangup"] + summary["dropped"] \
        + summary["emergency_transfer"] + summary["callback_requested"] == 12
    assert summary["calls"] == out.stderr.count("hotline.service: call ")     # one log line per call


@pytest.mark.ivr
async def test_prompts_build_takes_a_live_flows_own_text_and_sound_names(tmp_path, pg_dsn, pg_pool):
    import asyncio as _asyncio

    from tests.flows import install_flow
    from ivr.runner import shipped_flow_source

    # a centre's copy of the shipped flow: its own greeting text, and a sound of its own
    custom = shipped_flow_source().replace('text = "您好，幺二三四五热线。"', 'text = "您好，这里是幺二三四五热线。"').replace(
        'audio = "hotline/goodbye"', 'audio = "centre/goodbye"')
    await install_flow(pg_pool, custom)
    out = await _asyncio.to_thread(run, "prompts", "build", "--sounds-dir", str(tmp_path),
                                   env={"HOTLINE_DATABASE_URL": pg_dsn})
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "centre" / "goodbye.wav").exists()           # the live flow's own sound
    assert (tmp_path / "hotline" / "goodbye.wav").exists()          # the shipped flow's too
    assert "FAILED" not in out.stdout
