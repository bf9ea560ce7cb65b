"""IVR prompts: each has its Chinese text and the sound name Asterisk plays; missing sounds are
synthesised so a site can go live before the studio recordings exist.

How this works: a ``Prompt`` is validated when it is made (its ``audio`` is the name STREAM FILE
takes: a relative path without extension). ``build_prompts`` looks at each prompt's sound in
``<sounds_dir>[/<language_dir>]/``. A sound that is already there in any format Asterisk plays
(``.wav``, ``.alaw``, ``.gsm``, ``.sln16``, ...: a studio recording) is kept unless ``force``.
Otherwise espeak-ng's Mandarin voice (``DEFAULT_VOICE``) speaks the text (given on stdin, so it is never read as
options) to a 22,050 Hz WAV in a private temporary directory; sox converts it to what Asterisk's
``wav`` format reads (8,000 Hz, mono, 16-bit signed PCM), normalised to -3 dBFS, into a hidden
temporary file in the destination directory. That file is checked (``check_wav``: format, a
finalised header, and speech in it, not silence), made readable (0644: Asterisk runs as its own
user), flushed to disk, and only then renamed over the sound's name (``os.replace``), so Asterisk
never opens a half-written file. Each prompt has a time limit; a failure is reported under the
prompt's name and the next prompt goes on.

Write the text as it is to be spoken: espeak-ng reads a run of digits as a quantity (12345 comes
out as a wrong "十二千三百四十五", 110 as "一百一十"), so write 幺二三四五 and 幺幺零 for numbers read
digit by digit. Latin letters are read as pinyin.

Blocking (subprocesses, file I/O): from the event loop, run it in a thread.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ivr.flow import SOUND_EXTENSIONS, check_prompt_text, check_sound_name
from recordings.check import HEAD_BYTES, WavError, parse_wav_header, wav_audio

# espeak-ng's Mandarin reads 汉字 through its pinyin. Its plain ``cmn`` voice reads Latin text as
# English, and in espeak-ng 1.51 (Debian 12) that includes the pinyin of most characters: 您好 comes
# out as English "nin two hao three". ``cmn-latn-pinyin`` reads that pinyin in Mandarin.
DEFAULT_VOICE = "cmn-latn-pinyin"
PROMPT_TIMEOUT = 30.0          # seconds per prompt, synthesis and conversion together
MAX_NAME_CHARS = 100
RATE, CHANNELS, BITS = 8000, 1, 16  # Asterisk's slin in a .wav
SILENCE_PEAK = 328             # a peak under 1% of full scale is silence (dither included)

_LANGUAGE_RE = re.compile(r"[A-Za-z0-9_\-]+")
_VOICE_RE = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9_+/\-]*")
_TOOLS = {"espeak-ng": "espeak-ng", "sox": "sox"}  # command -> Debian package


class PromptError(ValueError):
    """A prompt (or a build argument) that is not acceptable; the message names it."""


class ToolMissing(RuntimeError):
    """espeak-ng or sox is not installed; the message names the package."""


@dataclass(frozen=True)
class Prompt:
    name: str    # the flow's name for it, e.g. "welcome"
    text: str    # what it says, in Chinese
    audio: str   # the sound name STREAM FILE takes, e.g. "hotline/welcome"

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_text(self.name, self.text)
        _check_audio(self.name, self.audio)

    def wav_path(self, sounds_dir: str | os.PathLike[str], language_dir: str | None = None) -> Path:
        """Where the built sound goes: ``<sounds_dir>[/<language_dir>]/<audio>.wav``."""
        return _sound_dir(Path(sounds_dir), language_dir) / f"{self.audio}.wav"


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS or not name.isprintable() \
            or any(c.isspace() for c in name):
        raise PromptError(f"prompt name {name!r}: 1 to {MAX_NAME_CHARS} printable characters, no blanks")


def _check_text(name: str, text: object) -> None:
    try:
        check_prompt_text(text)
    except ValueError as exc:
        raise PromptError(f"prompt {name!r}: {exc}") from None


def _check_audio(name: str, audio: object) -> None:
    try:
        check_sound_name(audio)
    except ValueError as exc:
        raise PromptError(f"prompt {name!r}: audio name {audio!r}: {exc}") from None


def _sound_dir(sounds_dir: Path, language_dir: str | None) -> Path:
    if language_dir is None:
        return sounds_dir
    if not isinstance(language_dir, str) or not _LANGUAGE_RE.fullmatch(language_dir) \
            or language_dir.startswith("-"):
        raise PromptError(f"language directory {language_dir!r}: one name of letters, digits, _ and - "
                          f"(e.g. zh)")
    return sounds_dir / language_dir


# --- checking a WAV -----------------------------------------------------------------------------

@dataclass(frozen=True)
class WavInfo:
    rate: int
    channels: int
    bits: int
    seconds: float
    peak: int    # largest absolute sample value (0..32768)


def check_wav(path: str | os.PathLike[str]) -> WavInfo:
    """Check that ``path`` is a sound Asterisk's ``wav`` format plays: a plain PCM WAV (format tag
    1, not WAVE_FORMAT_EXTENSIBLE, which format_wav refuses), 8,000 Hz, mono, 16-bit, with a
    finalised header and all the audio it promises. Raises ``WavError`` saying what is wrong."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(HEAD_BYTES)
        try:
            layout = parse_wav_header(head)
        except struct.error as exc:
            raise WavError(f"unreadable WAV header: {exc}") from None
        tag, bits = _fmt_tag_and_bits(head)
        if tag != 1:
            raise WavError(f"format tag {tag:#06x}: Asterisk reads only plain PCM (tag 1)")
        if (layout.rate, layout.channels, bits) != (RATE, CHANNELS, BITS):
            raise WavError(f"{layout.rate} Hz, {layout.channels} channel(s), {bits}-bit: Asterisk's wav "
                           f"needs {RATE} Hz, mono, {BITS}-bit")
        audio = wav_audio(layout, size)
        if not audio.finished:
            raise WavError("the header's sizes were never finalised")
        if not audio.whole:
            raise WavError("truncated: less audio than the header promises")
        f.seek(layout.data_offset)
        samples = array("h")
        samples.frombytes(f.read(min(layout.data_declared, size - layout.data_offset) & ~1))
    if sys.byteorder == "big":
        samples.byteswap()
    peak = max(max(samples, default=0), -min(samples, default=0))
    return WavInfo(layout.rate, layout.channels, bits, audio.seconds, peak)


def _fmt_tag_and_bits(head: bytes) -> tuple[int, int]:
    pos = 12
    while pos + 8 <= len(head):
        chunk_id, size = head[pos:pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        if chunk_id == b"fmt ":
            tag, _ch, _rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", head, pos + 8)
            return tag, bits
        pos += 8 + size + (size & 1)
    raise WavError("no fmt chunk")  # parse_wav_header found one, so not reached


# --- building -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PromptOutcome:
    name: str
    audio: str
    path: Path                      # the sound's .wav
    detail: str = ""                # why it was kept or failed; a note for a built one
    seconds: float | None = None    # length of the built sound

    def describe(self) -> str:
        text = f"prompt {self.name!r} ({self.audio})"
        if self.seconds is not None:
            text += f", {self.seconds:.1f} s"
        return f"{text}: {self.detail}" if self.detail else text


@dataclass(frozen=True)
class BuildReport:
    built: tuple[PromptOutcome, ...] = ()
    kept: tuple[PromptOutcome, ...] = ()
    failed: tuple[PromptOutcome, ...] = ()
    seconds: float = 0.0            # wall time of the whole build

    @property
    def ok(self) -> bool:
        return not self.failed

    def lines(self) -> list[str]:
        """One line per prompt, for the CLI: built, kept, then failed."""
        return ([f"built  {o.describe()}" for o in self.built]
                + [f"kept   {o.describe()}" for o in self.kept]
                + [f"FAILED {o.describe()}" for o in self.failed])


@dataclass
class _Collector:
    built: list[PromptOutcome] = field(default_factory=list)
    kept: list[PromptOutcome] = field(default_factory=list)
    failed: list[PromptOutcome] = field(default_factory=list)


class _Failed(Exception):
    pass


def build_prompts(prompts: Iterable[Prompt], sounds_dir: str | os.PathLike[str], *, force: bool = False,
                  language_dir: str | None = None, voice: str = DEFAULT_VOICE,
                  timeout: float = PROMPT_TIMEOUT) -> BuildReport:
    """Synthesise each prompt whose sound is missing (every prompt with ``force``) into
    ``<sounds_dir>[/<language_dir>]/<audio>.wav``; report built, kept and failed, by name.

    Raises ``PromptError`` for a bad ``language_dir`` or ``voice`` and ``ToolMissing`` when a sound
    has to be built and espeak-ng or sox is not installed. Everything else is a prompt's failure."""
    started = time.monotonic()
    prompts = list(prompts)
    base = _sound_dir(Path(os.path.abspath(sounds_dir)), language_dir)
    if not isinstance(voice, str) or not _VOICE_RE.fullmatch(voice):
        raise PromptError(f"espeak-ng voice {voice!r}: letters, digits and _ + / - (e.g. cmn)")
    out = _Collector()
    todo: list[tuple[Prompt, Path]] = []
    seen: dict[str, Prompt] = {}
    names: set[str] = set()
    for prompt in prompts:
        wav = base / f"{prompt.audio}.wav"
        if prompt.name in names:
            out.failed.append(PromptOutcome(prompt.name, prompt.audio, wav, "a second prompt of this name"))
            continue
        names.add(prompt.name)
        first = seen.setdefault(prompt.audio, prompt)
        if first is not prompt:
            if first.text != prompt.text:
                out.failed.append(PromptOutcome(prompt.name, prompt.audio, wav,
                                                f"same audio as prompt {first.name!r} with another text"))
            else:
                out.kept.append(PromptOutcome(prompt.name, prompt.audio, wav,
                                              f"same sound as prompt {first.name!r}"))
            continue
        existing = _existing_sounds(wav)
        if existing and not force:
            out.kept.append(PromptOutcome(prompt.name, prompt.audio, wav,
                                          f"{', '.join(existing)} already there"))
        else:
            todo.append((prompt, wav))
    if todo:
        tools = _find_tools()
        with tempfile.TemporaryDirectory(prefix="hotline-prompts-") as work:
            for i, (prompt, wav) in enumerate(todo):
                try:
                    info = _build_one(prompt, wav, Path(work) / f"{i}.wav", tools, voice, timeout)
                except _Failed as exc:
                    out.failed.append(PromptOutcome(prompt.name, prompt.audio, wav, str(exc)))
                    continue
                others = [n for n in _existing_sounds(wav) if not n.endswith(".wav")]
                note = f"Asterisk may still prefer {', '.join(others)}" if others else ""
                out.built.append(PromptOutcome(prompt.name, prompt.audio, wav, note, info.seconds))
    return BuildReport(tuple(out.built), tuple(out.kept), tuple(out.failed),
                       round(time.monotonic() - started, 3))


def _existing_sounds(wav: Path) -> list[str]:
    """The files that are this sound in a format Asterisk plays (``welcome.wav``, ``welcome.alaw``)."""
    stem = wav.name[:-len(".wav")]
    try:
        entries = set(os.listdir(wav.parent))
    except OSError:
        return []
    return [f"{stem}.{ext}" for ext in SOUND_EXTENSIONS if f"{stem}.{ext}" in entries]


def _find_tools() -> dict[str, str]:
    found, missing = {}, []
    for command, package in _TOOLS.items():
        path = shutil.which(command)
        if path is None:
            missing.append(package)
        else:
            found[command] = path
    if missing:
        raise ToolMissing(f"{' and '.join(missing)} not installed: building prompts needs them "
                          f"(apt-get install {' '.join(missing)}, or scripts/setup.sh)")
    return found


def _build_one(prompt: Prompt, wav: Path, raw: Path, tools: dict[str, str], voice: str,
               timeout: float) -> WavInfo:
    deadline = time.monotonic() + timeout
    if wav.exists() and not wav.is_file():
        raise _Failed(f"{wav} exists and is not a file")
    # espeak-ng: text on stdin (never an argument, so never an option), UTF-8, to a private file.
    _run("espeak-ng", [tools["espeak-ng"], "-v", voice, "-b", "1", "--stdin", "-w", str(raw)],
         prompt.text.encode("utf-8"), deadline, timeout)
    if not raw.is_file() or raw.stat().st_size <= 44:
        raise _Failed("espeak-ng produced no audio")
    try:
        wav.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=wav.parent, prefix=f".{wav.name}.", suffix=".tmp")
    except OSError as exc:
        raise _Failed(f"cannot write in {wav.parent}: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    try:
        os.close(fd)
        # sox: 8 kHz mono 16-bit signed PCM WAV, peak at -3 dBFS; -R: the same input gives the same bytes.
        _run("sox", [tools["sox"], "-R", "-V1", str(raw), "-t", "wav", "-e", "signed-integer",
                     "-b", str(BITS), "-c", str(CHANNELS), "-r", str(RATE), str(tmp),
                     "rate", str(RATE), "gain", "-n", "-3"], None, deadline, timeout)
        try:
            info = check_wav(tmp)
        except (OSError, WavError) as exc:
            raise _Failed(f"the converted sound is not usable: {exc}") from None
        if info.peak < SILENCE_PEAK or info.seconds <= 0:
            raise _Failed("espeak-ng produced only silence: the text has nothing it can speak")
        try:
            os.chmod(tmp, 0o644)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, wav)
        except OSError as exc:
            raise _Failed(f"cannot put the sound in place at {wav}: {exc.strerror or exc}") from None
        _fsync_dir(wav.parent)
        return info
    finally:
        tmp.unlink(missing_ok=True)
        raw.unlink(missing_ok=True)


def _run(tool: str, argv: list[str], stdin: bytes | None, deadline: float, timeout: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _Failed(f"ran over the time limit of {timeout:g} s")
    try:
        done = subprocess.run(argv, input=stdin if stdin is not None else b"", capture_output=True,
                              timeout=remaining, check=False)
    except subprocess.TimeoutExpired:
        raise _Failed(f"{tool} ran over the time limit of {timeout:g} s") from None
    except OSError as exc:
        raise _Failed(f"{tool} could not run: {exc}") from None
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise _Failed(f"{tool} failed (exit status {done.returncode})"
                      + (f": {said[-1][:300]}" if said else ""))


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
