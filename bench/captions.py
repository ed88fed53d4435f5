"""Caption throughput: warm cache against cold, and achieved request rate against the configured limit.

Runs the real captioner (openai client) against the sample archive's
chat-completions endpoint with added latency, on the same records twice:
cold (every caption asked for) then warm (every caption from the cache).
Prints ratios last.  Usage: python bench/captions.py [--records 200] [--rate 20] [--latency-ms 50]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from bestiary.captioning.llm import LLMCaptioner, llm_inputs
from bestiary.sample_archive.server import start_in_thread
from bestiary.schemas.config import LLMConfig

TAXON = {"accepted_name": "Parus major", "common_name": "Great Tit", "class": "Aves", "order": "Passeriformes",
         "family": "Paridae", "genus": "Parus", "species": "Parus major"}


def records(n: int) -> list[dict]:
    return [{"key": f"xc:{i}", "common_name": "Great Tit", "sound_type": "song", "remarks": f"Bout number {i}.",
             "recordist": "A. Person", "country": "Germany", "attribution": "A. Person", "raw": json.dumps({"id": i})}
            for i in range(n)]


def run(cap: LLMCaptioner, recs: list[dict], concurrency: int) -> float:
    def one(rec):
        inputs, terms = llm_inputs(rec, TAXON, "class Aves, family Paridae, genus Parus")
        return cap.caption(inputs, terms)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, recs))
    elapsed = time.perf_counter() - t0
    assert all(text for text, _, _ in results), [r for r in results if not r[0]][:3]
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200)
    ap.add_argument("--rate", type=float, default=20.0, help="configured requests/s")
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--concurrency", type=int, default=8)
    a = ap.parse_args()
    server, state, url = start_in_thread(latency_ms=a.latency_ms)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = LLMConfig(base_url=f"{url}/v1", model="bench", requests_per_second=a.rate, concurrency=a.concurrency)
        recs = records(a.records)
        cold_cap = LLMCaptioner(cfg, f"{tmp}/c.sqlite", "cold")
        cold = run(cold_cap, recs, a.concurrency)
        sent = state.counts["chat_completions"]
        warm = run(LLMCaptioner(cfg, f"{tmp}/c.sqlite", "warm"), recs, a.concurrency)
        assert state.counts["chat_completions"] == sent, "the warm run asked the server"
    server.shutdown()
    achieved = sent / cold
    print(f"records {a.records}, latency {a.latency_ms:g} ms, limit {a.rate:g} req/s, concurrency {a.concurrency}")
    print(f"cold: {a.records / cold:8.1f} captions/s ({sent} requests in {cold:.2f} s)")
    print(f"warm: {a.records / warm:8.1f} captions/s (0 requests in {warm:.3f} s)")
    print(f"warm / cold captions per second: {cold / warm:.1f}x")
    print(f"achieved / limit requests per second: {achieved:.2f} / {a.rate:g} = {achieved / a.rate:.3f}")


if __name__ == "__main__":
    main()
