"""LLM captions through the `openai` client, against any OpenAI-compatible server.

Inputs (names, taxonomy, call type, sex, life stage, scrubbed remarks) go in a
delimited RECORD block as data.  Outputs are validated; anything that fails
falls back to a template caption with the reason recorded.  Results are cached
by (model, prompt version, inputs), requests are rate limited and counted
against a budget, and the openai client retries 429 and 5xx with backoff.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import openai
import yaml

from bestiary.captioning.cache import Budget, CaptionCache, cache_key
from bestiary.captioning.scrub import scrub, sensitive_terms
from bestiary.captioning.validate import check_caption
from bestiary.connectors.http import Pacer
from bestiary.schemas.config import LLMConfig

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"


@dataclass(frozen=True)
class Prompt:
    version: str
    system: str
    few_shot: list[dict]
    user_template: str

    @classmethod
    def load(cls, path: str | None = None) -> "Prompt":
        data = yaml.safe_load(Path(path or PROMPT_DIR / "caption-v1.yaml").read_text())
        return cls(data["version"], data["system"], data.get("few_shot", []), data["user_template"])

    def messages(self, inputs: dict) -> list[dict]:
        msgs = [{"role": "system", "content": self.system}]
        for ex in self.few_shot:
            msgs.append({"role": "user", "content": self.user_template.format(record=_block(ex["input"]))})
            msgs.append({"role": "assistant", "content": ex["output"]})
        msgs.append({"role": "user", "content": self.user_template.format(record=_block(inputs))})
        return msgs


def _block(inputs: dict) -> str:
    # JSON keeps every value a quoted string: nothing in it can close the block or pose as an instruction
    return json.dumps(inputs, ensure_ascii=False, sort_keys=True).replace("<", "\\u003c").replace(">", "\\u003e")


def llm_inputs(rec: dict, taxon: dict, taxonomy: str) -> tuple[dict, list[str]]:
    """What the model sees for one recording, with people and places scrubbed; and the sensitive terms."""
    raw = json.loads(rec.get("raw") or "{}")
    terms = sensitive_terms({"recordist": rec.get("recordist"), "country": rec.get("country"),
                             "locality": raw.get("loc") or raw.get("place_guess") or raw.get("location"),
                             "attribution": rec.get("attribution"), "remarks": rec.get("remarks")})
    names = {taxon.get("common_name") or "", taxon.get("accepted_name") or ""}
    terms = [t for t in terms if not any(t.lower() in n.lower() for n in names if n)]
    inputs = {
        "common_name": taxon.get("common_name") or rec.get("common_name"),
        "scientific_name": taxon["accepted_name"], "taxonomy": taxonomy,
        "sound_type": rec.get("sound_type"), "sex": raw.get("sex") or raw.get("ageSex") or None,
        "life_stage": raw.get("stage") or None, "remarks": scrub(rec.get("remarks"), terms),
    }
    return {k: (v or None) for k, v in inputs.items()}, terms


@dataclass
class Tally:
    requests: int = 0
    cache_hits: int = 0
    llm: int = 0
    fallbacks: dict = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **kw) -> None:
        with self.lock:
            for k, v in kw.items():
                if k == "fallback":
                    self.fallbacks[v] = self.fallbacks.get(v, 0) + 1
                else:
                    setattr(self, k, getattr(self, k) + v)

    def summary(self, cfg: LLMConfig) -> dict:
        cost = self.prompt_tokens / 1000 * cfg.price_per_1k_input + self.completion_tokens / 1000 * cfg.price_per_1k_output
        return {"requests": self.requests, "cache_hits": self.cache_hits, "llm_captions": self.llm,
                "fallbacks": dict(sorted(self.fallbacks.items())), "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "estimated_cost": round(cost, 4)}


class LLMCaptioner:
    """One per run (the LLM host's group): an openai client, a pacer, the shared cache and the run's budget."""

    def __init__(self, cfg: LLMConfig, cache_root: str):
        self.cfg = cfg
        self.prompt = Prompt.load(cfg.prompt_file)
        key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        self.client = openai.OpenAI(base_url=cfg.base_url, api_key=key or "not-needed", timeout=cfg.timeout_s,
                                    max_retries=cfg.max_retries)
        self.bucket = Pacer(cfg.requests_per_second)  # no burst: never above the limit
        self.cache = CaptionCache(cache_root)
        self.budget = Budget(cfg.max_requests, cfg.max_tokens)
        self.tally = Tally()

    def caption(self, inputs: dict, terms: list[str]) -> tuple[str | None, str | None, bool]:
        """(caption or None, fallback reason or None, from cache)."""
        key = cache_key(self.cfg.model, self.prompt.version, inputs)
        hit = self.cache.get(key)
        if hit is not None:
            self.tally.add(cache_hits=1)
            text, meta = hit
            return (text, None, True) if text else (None, meta.get("reason"), True)
        if not self.budget.spend(1, 0):
            return None, "budget_exhausted", False
        text, reason = self._ask(inputs)
        if text is not None:
            reason = check_caption(text, [inputs.get("common_name"), inputs.get("scientific_name")], terms,
                                   inputs.get("remarks"))
        if reason is None:
            self.cache.put(key, text.strip(), {"model": self.cfg.model, "prompt": self.prompt.version})
            self.tally.add(llm=1)
            return text.strip(), None, False
        if reason in DETERMINISTIC_FAILURES:  # asking again would get the same answer: remember it
            self.cache.put(key, "", {"reason": reason})
        return None, reason, False

    def _ask(self, inputs: dict) -> tuple[str | None, str | None]:
        self.bucket.acquire()
        self.tally.add(requests=1)
        try:
            resp = self.client.chat.completions.create(
                model=self.cfg.model, messages=self.prompt.messages(inputs),
                max_tokens=self.cfg.max_output_tokens, temperature=self.cfg.temperature)
        except openai.RateLimitError:
            return None, "rate_limited"
        except openai.APITimeoutError:
            return None, "timeout"
        except openai.APIConnectionError:
            return None, "connection_error"
        except openai.APIStatusError as err:
            return None, f"http_{err.status_code}"
        except (openai.APIResponseValidationError, ValueError, TypeError):
            return None, "invalid_response"
        usage = getattr(resp, "usage", None)
        if usage is not None:
            self.tally.add(prompt_tokens=usage.prompt_tokens or 0, completion_tokens=usage.completion_tokens or 0)
            self.budget.spend(0, usage.total_tokens or 0)
        if not getattr(resp, "choices", None):
            return None, "empty_choice"
        msg = resp.choices[0].message
        if getattr(msg, "refusal", None):
            return None, "refusal"
        return msg.content, None


DETERMINISTIC_FAILURES = {"too_short", "too_long", "animal_not_named", "instruction_echo", "remarks_echo",
                          "place_or_person", "refusal", "empty_output"}
