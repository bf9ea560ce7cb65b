"""Prompts: wall time to build 20 prompt sounds from text (espeak-ng cmn + sox, real tools).

Run from the project root: ``.venv/bin/python -m bench.prompts_build``. Into a fresh temporary
sounds directory it builds 20 Chinese IVR prompts (all missing), then runs again (all kept: the
cost of a no-op ``hotline prompts build``), then with ``force`` (all rebuilt over the first ones).
Every built file is checked with ``check_wav``. One JSON line per result on stdout.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.common import emit, progress, r
from ivr.prompts import Prompt, build_prompts, check_wav

TEXTS = [
    "您好，欢迎致电12345政务服务便民热线。",
    "咨询请按1，投诉举报请按2，企业服务请按3，其他业务请直接等待人工服务。",
    "本次通话将被录音。",
    "坐席正忙，请您稍候，我们将尽快为您服务。",
    "您前面还有三位来电者在等候。",
    "现在是非工作时间，请在提示音后留下您的姓名、电话和诉求。",
    "请对本次服务进行评价，满意请按1，基本满意请按2，不满意请按3。",
    "感谢您的评价，再见。",
    "查询工单办理进度请按井号键后输入工单编号。",
    "您输入的工单编号不存在，请重新输入。",
    "您的工单正在办理中，承办单位将在五个工作日内答复。",
    "台风防御期间，防汛救灾相关诉求请按1。",
    "涉企服务专席，请按2。",
    "粤语服务请按8。",
    "如遇危及生命财产安全的紧急情况，请直接拨打110。",
    "正在为您转接市领导接线，请稍候。",
    "领导接线时段已结束，您的诉求已记录，我们将及时回复。",
    "您的来电未能接通，我们将尽快给您回电。",
    "输入有误，请重新选择。",
    "谢谢您的来电，再见。",
]


def main() -> None:
    prompts = [Prompt(f"p{i:02d}", text, f"hotline/bench_{i:02d}") for i, text in enumerate(TEXTS)]
    with tempfile.TemporaryDirectory(prefix="bench-prompts-") as tmp:
        sounds = Path(tmp)
        progress(f"building {len(prompts)} prompts into {sounds}")
        t0 = time.perf_counter()
        cold = build_prompts(prompts, sounds)
        cold_s = time.perf_counter() - t0
        if not cold.ok:
            raise SystemExit("\n".join(cold.lines()))
        infos = [check_wav(p.wav_path(sounds)) for p in prompts]
        t0 = time.perf_counter()
        kept = build_prompts(prompts, sounds)
        kept_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        forced = build_prompts(prompts, sounds, force=True)
        forced_s = time.perf_counter() - t0
    audio_s = sum(i.seconds for i in infos)
    emit({
        "name": "prompts_build_20",
        "value": r(cold_s), "unit": "s",
        "prompts": len(prompts), "built": len(cold.built),
        "per_prompt_ms": r(cold_s / len(prompts) * 1000, 1),
        "audio_seconds_total": r(audio_s, 1),
        "all_8khz_mono_16bit": all((i.rate, i.channels, i.bits) == (8000, 1, 16) for i in infos),
        "rebuild_all_kept_s": r(kept_s), "kept": len(kept.kept),
        "force_rebuild_s": r(forced_s), "force_built": len(forced.built),
    })


if __name__ == "__main__":
    main()
