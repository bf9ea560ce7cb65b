"""Prompt audio built from text with the real espeak-ng and sox (nothing mocked)."""

from __future__ import annotations

import shutil
import stat
import subprocess
import struct
import wave
from pathlib import Path

import pytest

from ivr.prompts import (DEFAULT_VOICE, BuildReport, Prompt, PromptError, ToolMissing, WavError, build_prompts,
                         check_wav)

WELCOME = Prompt("welcome", "您好，欢迎致电12345政务服务便民热线。", "hotline/welcome")
MENU = Prompt("menu", "咨询请按1，投诉举报请按2，企业服务请按3，其他业务请直接等待人工服务。", "hotline/menu")
SURVEY = Prompt("survey", "请对本次服务进行评价，满意请按1，不满意请按2。", "hotline/survey")
PROMPTS = [WELCOME, MENU, SURVEY]


def wav_of(sounds: Path, audio: str) -> Path:
    return sounds / f"{audio}.wav"


def stdlib_params(path: Path) -> tuple[int, int, int, float]:
    """Read with the standard library's wave module, independently of check_wav."""
    with wave.open(str(path), "rb") as w:
        return w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes() / w.getframerate()


def leftovers(sounds: Path) -> list[Path]:
    return [p for p in sounds.rglob("*") if p.is_file() and not p.name.endswith(".wav")]


def test_builds_missing_wavs_8khz_mono_16bit(tmp_path):
    report = build_prompts(PROMPTS, tmp_path)
    assert isinstance(report, BuildReport)
    assert [o.name for o in report.built] == ["welcome", "menu", "survey"]
    assert report.kept == () and report.failed == () and report.ok
    for prompt in PROMPTS:
        path = wav_of(tmp_path, prompt.audio)
        assert path == prompt.wav_path(tmp_path)
        rate, channels, width, seconds = stdlib_params(path)
        assert (rate, channels, width) == (8000, 1, 2)
        assert seconds > 0.5
        info = check_wav(path)
        assert (info.rate, info.channels, info.bits) == (8000, 1, 16)
        assert info.seconds > 0.5 and info.peak > 10000  # speech, normalised to -3 dBFS
        assert stat.S_IMODE(path.stat().st_mode) == 0o644  # Asterisk runs as its own user
    assert leftovers(tmp_path) == []  # no temporary file left beside the sounds
    built = {o.name: o for o in report.built}
    assert built["menu"].seconds > built["welcome"].seconds > 0.5
    assert any("welcome" in line and line.startswith("built") for line in report.lines())


def test_keeps_existing_recordings(tmp_path):
    studio = wav_of(tmp_path, WELCOME.audio)
    studio.parent.mkdir(parents=True)
    studio.write_bytes(b"studio recording, not touched")
    (tmp_path / "hotline" / "menu.alaw").write_bytes(b"studio alaw")  # another format Asterisk plays
    report = build_prompts(PROMPTS, tmp_path)
    assert [o.name for o in report.kept] == ["welcome", "menu"]
    assert [o.name for o in report.built] == ["survey"]
    assert studio.read_bytes() == b"studio recording, not touched"
    assert not wav_of(tmp_path, MENU.audio).exists()  # Asterisk would pick it over the studio alaw
    assert "menu.alaw" in report.kept[1].detail
    again = build_prompts(PROMPTS, tmp_path)
    assert again.built == () and [o.name for o in again.kept] == ["welcome", "menu", "survey"]


def test_force_overwrites_and_is_reproducible(tmp_path):
    studio = wav_of(tmp_path, WELCOME.audio)
    studio.parent.mkdir(parents=True)
    studio.write_bytes(b"old")
    report = build_prompts([WELCOME], tmp_path, force=True)
    assert [o.name for o in report.built] == ["welcome"]
    first = studio.read_bytes()
    assert first != b"old" and check_wav(studio).seconds > 0.5
    build_prompts([WELCOME], tmp_path, force=True)
    assert studio.read_bytes() == first  # same text, same bytes
    assert leftovers(tmp_path) == []


def test_force_notes_a_studio_recording_in_another_format(tmp_path):
    (tmp_path / "hotline").mkdir()
    (tmp_path / "hotline" / "welcome.g722").write_bytes(b"studio g722")
    report = build_prompts([WELCOME], tmp_path, force=True)
    assert [o.name for o in report.built] == ["welcome"]
    assert "welcome.g722" in report.built[0].detail


@pytest.mark.parametrize("audio", [
    "/var/lib/asterisk/sounds/x", "../x", "hotline/../../etc/x", "hotline//x", "hotline/", "./x",
    "hotline/welcome.wav", "hotline/welcome.alaw", "hot line", "hotline/x\n", "x;rm -rf", "欢迎",
    "-v", "hotline/.hidden", "", "a" * 201,
])
def test_bad_audio_names_are_rejected_naming_them(audio):
    with pytest.raises(PromptError) as err:
        Prompt("greeting_bad", "您好。", audio)
    assert "greeting_bad" in str(err.value) and repr(audio)[:40] in str(err.value)


@pytest.mark.parametrize("audio", ["welcome", "hotline/welcome", "zh/hotline/menu-2", "a_b.v2/c-1.final"])
def test_good_audio_names(audio):
    assert Prompt("p", "您好。", audio).audio == audio


@pytest.mark.parametrize("text", ["", "   ", "\u3000", "您好\n请按1", "您好\x00", "您好\u202e", "好" * 1001])
def test_bad_texts_are_rejected(text):
    with pytest.raises(PromptError, match="greeting"):
        Prompt("greeting", text, "hotline/greeting")


@pytest.mark.parametrize("name", ["", "two words", "x\n", "n" * 101])
def test_bad_names_are_rejected(name):
    with pytest.raises(PromptError):
        Prompt(name, "您好。", "hotline/x")


def test_a_failing_prompt_does_not_stop_the_others(tmp_path):
    silent = Prompt("pause", "。。。……", "hotline/pause")  # espeak-ng speaks nothing: only silence
    (tmp_path / "blocked").write_bytes(b"a file where a directory should be")
    unwritable = Prompt("blocked", "您好。", "blocked/x")
    report = build_prompts([WELCOME, silent, unwritable, SURVEY], tmp_path)
    assert [o.name for o in report.built] == ["welcome", "survey"]
    assert [o.name for o in report.failed] == ["pause", "blocked"]
    assert not report.ok
    assert "silence" in report.failed[0].detail
    assert not wav_of(tmp_path, silent.audio).exists()
    failed_lines = [line for line in report.lines() if line.startswith("FAILED")]
    assert "'pause'" in failed_lines[0] and "'blocked'" in failed_lines[1]
    assert leftovers(tmp_path) == [tmp_path / "blocked"]


def test_an_impossible_voice_fails_each_prompt_with_espeaks_reason(tmp_path):
    report = build_prompts([WELCOME, MENU], tmp_path, voice="nosuchvoice")
    assert [o.name for o in report.failed] == ["welcome", "menu"]
    assert all("voice does not exist" in o.detail for o in report.failed)
    assert report.built == () and leftovers(tmp_path) == []
    assert not wav_of(tmp_path, WELCOME.audio).exists()


def test_voice_and_language_dir_arguments_are_checked(tmp_path):
    with pytest.raises(PromptError, match="voice"):
        build_prompts([WELCOME], tmp_path, voice="--help")
    for bad in ("../zh", "zh/cn", "", "-zh"):
        with pytest.raises(PromptError, match="language"):
            build_prompts([WELCOME], tmp_path, language_dir=bad)


def test_language_dir(tmp_path):
    report = build_prompts([WELCOME], tmp_path, language_dir="zh")
    path = tmp_path / "zh" / "hotline" / "welcome.wav"
    assert report.built[0].path == path == WELCOME.wav_path(tmp_path, "zh")
    assert check_wav(path).seconds > 0.5


def test_text_that_looks_like_options_is_spoken(tmp_path):
    trap = tmp_path / "trap.wav"
    dashes = Prompt("dashes", f"--help -w {trap} 请稍候。", "hotline/dashes")
    report = build_prompts([dashes], tmp_path)
    assert [o.name for o in report.built] == ["dashes"]
    assert check_wav(wav_of(tmp_path, dashes.audio)).seconds > 1.0
    assert not trap.exists()


def test_duplicates(tmp_path):
    same_sound = Prompt("welcome_again", WELCOME.text, WELCOME.audio)
    clash = Prompt("welcome_other", "另一段话。", WELCOME.audio)
    twice = Prompt("welcome", "同名。", "hotline/other")
    report = build_prompts([WELCOME, same_sound, clash, twice], tmp_path)
    assert [o.name for o in report.built] == ["welcome"]
    assert [o.name for o in report.kept] == ["welcome_again"]
    assert [(o.name, o.audio) for o in report.failed] == [("welcome_other", WELCOME.audio),
                                                          ("welcome", "hotline/other")]


def test_time_limit_per_prompt(tmp_path):
    report = build_prompts([WELCOME], tmp_path, timeout=0.001)
    assert [o.name for o in report.failed] == ["welcome"]
    assert "time limit" in report.failed[0].detail
    assert leftovers(tmp_path) == [] and not wav_of(tmp_path, WELCOME.audio).exists()


def test_missing_espeak_names_the_package(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(ToolMissing, match="apt-get install espeak-ng sox"):
        build_prompts([WELCOME], tmp_path / "sounds")
    # nothing to build: the tools are not needed
    studio = wav_of(tmp_path / "sounds", WELCOME.audio)
    studio.parent.mkdir(parents=True)
    studio.write_bytes(b"studio")
    assert [o.name for o in build_prompts([WELCOME], tmp_path / "sounds").kept] == ["welcome"]


def test_default_voice_speaks_chinese_as_mandarin():
    """espeak-ng 1.51's plain ``cmn`` voice reads most characters as English pinyin ("nin two")."""
    for prompt in PROMPTS:
        phonemes = subprocess.run([shutil.which("espeak-ng"), "-v", DEFAULT_VOICE, "-q", "-x", "--stdin"],
                                  input=prompt.text.encode(), capture_output=True, check=True, timeout=30).stdout
        assert phonemes.strip() and b"(en)" not in phonemes, (prompt.name, phonemes)


def _write_wav(path: Path, rate: int, channels: int, width: int, frames: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(b"\x10\x20" * (frames * channels * width // 2))


@pytest.mark.parametrize("rate,channels,width", [(22050, 1, 2), (8000, 2, 2), (8000, 1, 1), (16000, 1, 2)])
def test_check_wav_rejects_what_asterisks_wav_cannot_play(tmp_path, rate, channels, width):
    path = tmp_path / "x.wav"
    _write_wav(path, rate, channels, width, 8000)
    with pytest.raises(WavError, match="8000 Hz"):
        check_wav(path)


def test_check_wav_rejects_truncated_extensible_and_garbage(tmp_path):
    good = tmp_path / "good.wav"
    _write_wav(good, 8000, 1, 2, 8000)
    info = check_wav(good)
    assert (info.rate, info.channels, info.bits, info.seconds) == (8000, 1, 16, 1.0)
    data = good.read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[:-100])
    with pytest.raises(WavError, match="truncated"):
        check_wav(tmp_path / "cut.wav")
    pcm_guid = bytes.fromhex("0100000000001000800000aa00389b71")
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 1, 8000, 16000, 2, 16, 22, 16, 4) + pcm_guid
    audio = data[44:]
    extensible = (b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(audio)) + b"WAVE"
                  + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(audio)) + audio)
    (tmp_path / "ext.wav").write_bytes(extensible)
    with pytest.raises(WavError, match="format tag 0xfffe"):  # format_wav refuses it
        check_wav(tmp_path / "ext.wav")
    (tmp_path / "junk.wav").write_bytes(b"not a wav at all")
    with pytest.raises(WavError):
        check_wav(tmp_path / "junk.wav")
