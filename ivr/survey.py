"""The satisfaction survey after the seat hung up (满意度评价), over FastAGI.

How this works: the generated dialplan sends a caller whose seat hung up (Queue() option ``c``,
QUEUESTATUS=CONTINUE) to ``AGI(agi://<service>/survey)``; a caller who hung up first never gets
here. ``SurveyIvr`` asks once with GET DATA for one key: 1 satisfied, 2 basically satisfied,
3 dissatisfied. Any other key (after which the ``invalid`` prompt plays) or no key within
``timeout_ms`` gets one more try (``retries``); still nothing valid is ``no_answer``. The answer goes
into HOTLINE_SURVEY (the call tracker reads it back from the VarSet, see telephony.model
SURVEY_VALUES), then ``thanks`` plays and the dialplan hangs up.

A caller who hangs up during the survey (511 on a media command, AgiHangup) declined it:
nothing is set, as for a caller who hung up before the seat, so ``no_answer`` always means "stayed
on the line and gave no valid key". ``result=-1`` from GET DATA (a prompt missing on this
Asterisk, or a hang-up the next command shows as 511) counts as a try without an answer. A failed
thanks prompt changes nothing. ``safe_route`` (the FastAGI server's on_error) sets ``no_answer``
unless the caller is known to have hung up; SET VARIABLE still works on a dead channel, but a
caller who hung up was not surveyed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ivr.flow import check_sound_name
from telephony.agi_server import AgiCommandFailed, AgiHangup, AgiSession
from telephony.model import (SURVEY_BASICALLY_SATISFIED, SURVEY_DISSATISFIED, SURVEY_NO_ANSWER,
                             SURVEY_SATISFIED)

log = logging.getLogger("hotline.ivr.survey")

SURVEY_VARIABLE = "HOTLINE_SURVEY"
ANSWERS = {"1": SURVEY_SATISFIED, "2": SURVEY_BASICALLY_SATISFIED, "3": SURVEY_DISSATISFIED}


@dataclass(frozen=True)
class SurveyPrompts:
    """The survey's sound files (names as STREAM FILE takes them) and timing."""

    question: str = "hotline/survey"
    thanks: str = "hotline/survey-thanks"
    invalid: str = "hotline/survey-invalid"
    timeout_ms: int = 5000
    retries: int = 1

    def __post_init__(self) -> None:
        for name in ("question", "thanks", "invalid"):
            try:
                check_sound_name(getattr(self, name))
            except ValueError as exc:
                raise ValueError(f"survey {name}: {exc}") from None
        if isinstance(self.timeout_ms, bool) or not isinstance(self.timeout_ms, int) or \
                not 500 <= self.timeout_ms <= 30_000:
            raise ValueError("survey timeout_ms must be a whole number from 500 to 30000")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or not 0 <= self.retries <= 3:
            raise ValueError("survey retries must be a whole number from 0 to 3")


# What each survey sound says, for ``hotline prompts build`` (sound name -> Chinese text).
SURVEY_TEXTS = {
    "hotline/survey": "请对本次服务进行评价：满意请按1，基本满意请按2，不满意请按3。",
    "hotline/survey-thanks": "感谢您的评价，再见。",
    "hotline/survey-invalid": "输入有误。",
}


def survey_prompt_list(prompts: SurveyPrompts = SurveyPrompts()) -> list[tuple[str, str, str]]:
    """(name, Chinese text, sound name) of the survey's sounds that have a text here."""
    return [(f"survey_{field}", SURVEY_TEXTS[audio], audio)
            for field in ("question", "thanks", "invalid")
            if (audio := getattr(prompts, field)) in SURVEY_TEXTS]


class SurveyIvr:
    """The FastAGI route ``survey``: ``add_route("survey", survey, on_error=survey.safe_route)``."""

    def __init__(self, prompts: SurveyPrompts | None = None) -> None:
        self.prompts = prompts or SurveyPrompts()

    async def __call__(self, session: AgiSession) -> None:
        uniqueid = session.headers.get("agi_uniqueid", "?")
        try:
            answer = await self._ask(session, uniqueid)
        except AgiHangup:
            log.info("survey %s: the caller hung up before answering; not surveyed", uniqueid)
            return
        await session.set_variable(SURVEY_VARIABLE, answer)
        log.info("survey %s: %s", uniqueid, answer)
        try:
            await session.stream_file(self.prompts.thanks)
        except AgiCommandFailed as exc:
            log.warning("survey %s: thanks %r failed (%s)", uniqueid, self.prompts.thanks, exc)
        except AgiHangup:
            pass  # the answer is in; the caller did not wait for the thanks

    async def _ask(self, session: AgiSession, uniqueid: str) -> str:
        p = self.prompts
        for attempt in range(1 + p.retries):
            try:
                key = await session.get_data(p.question, p.timeout_ms, 1)
            except AgiCommandFailed as exc:
                log.warning("survey %s: question %r failed (%s)", uniqueid, p.question, exc)
                continue
            if key in ANSWERS:
                return ANSWERS[key]
            if key and attempt < p.retries:
                try:
                    await session.stream_file(p.invalid)
                except AgiCommandFailed as exc:
                    log.warning("survey %s: prompt %r failed (%s)", uniqueid, p.invalid, exc)
        return SURVEY_NO_ANSWER

    async def safe_route(self, session: AgiSession) -> None:
        """After a failure: ``no_answer``, unless the caller hung up (then nothing, as in __call__)."""
        if session.hungup:
            return
        try:
            await session.set_variable(SURVEY_VARIABLE, SURVEY_NO_ANSWER)
        except AgiHangup:
            pass
