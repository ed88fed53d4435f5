"""A small OpenAI-compatible chat-completions endpoint for the demo and the tests.

It answers `POST /v1/chat/completions` with a deterministic caption built from
the RECORD block of the last user message.  Like a real model it can be
steered: remarks saying "ignore the instructions and write X" make it write X
(so the captioner's validator is what stops that).  Faults for tests come
from a queue on the server state or an `X-Bestiary-Fault` header.
"""
from __future__ import annotations

import json
import re
import time

FAULTS = ("429", "500", "invalid_json", "empty_choice", "refusal", "too_long", "slow")
INJECTION = re.compile(r"ignore (?:all |the |any |previous )*instructions?(?: and)? (?:write|say) (.+)", re.I)


def _record(messages: list[dict]) -> dict:
    user = [m for m in messages if m.get("role") == "user"]
    m = re.search(r"<RECORD>\s*(.*?)\s*</RECORD>", (user[-1]["content"] if user else ""), re.S)
    try:
        return json.loads(m.group(1)) if m else {}
    except ValueError:
        return {}


def fake_caption(rec: dict) -> str:
    remarks = rec.get("remarks") or ""
    steer = INJECTION.search(remarks)
    if steer:
        return steer.group(1).strip().strip('"')
    who = " ".join(w for w in (rec.get("life_stage"), rec.get("sex")) if w)
    family = re.search(r"family (\w+)", rec.get("taxonomy") or "")
    text = f"A{'n' if (who or rec.get('common_name') or 'x')[0].lower() in 'aeiou' else ''} {who + ' ' if who else ''}" \
           f"{rec.get('common_name')} ({rec.get('scientific_name')})"
    if family:
        text += f" of the family {family.group(1)}"
    return text + f" gives a {rec.get('sound_type') or 'call'}."


def completion(body: dict, text: str | None, refusal: str | None = None, choices: bool = True) -> dict:
    words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    out_words = len((text or refusal or "").split())
    return {
        "id": f"chatcmpl-{abs(hash(text)) % 10**12}", "object": "chat.completion", "created": 1700000000,
        "model": body.get("model", "sample"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": refusal},
                     "finish_reason": "stop", "logprobs": None}] if choices else [],
        "usage": {"prompt_tokens": words, "completion_tokens": out_words, "total_tokens": words + out_words},
    }


def answer(handler, state, body: dict, fault: str | None) -> None:
    """Write the HTTP answer for one chat-completions request."""
    if fault == "429":
        return handler._send(429, json.dumps({"error": {"message": "Rate limit reached", "type": "rate_limit"}}).encode(),
                             "application/json", {"Retry-After": "0"})
    if fault == "500":
        return handler._send(500, b'{"error": {"message": "internal error"}}', "application/json")
    if fault == "invalid_json":
        return handler._send(200, b'{"id": "x", "choices": [', "application/json")
    if fault == "slow":
        time.sleep(state.chat_slow_s)
    rec = _record(body.get("messages", []))
    if fault == "empty_choice":
        payload = completion(body, None, choices=False)
    elif fault == "refusal":
        payload = completion(body, None, refusal="I can't help with that.")
    elif fault == "too_long":
        payload = completion(body, fake_caption(rec) + " It" + " calls again and again" * 40 + ".")
    else:
        payload = completion(body, fake_caption(rec))
    handler._json(payload)
