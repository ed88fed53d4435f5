#!/usr/bin/env bash
# make demo: serve the sample archive, build the dataset, train, evaluate, stop the server.
# Run again, it reuses finished stages (the build skips up-to-date stages; training resumes).
set -euo pipefail
BIN=.venv/bin
PORT=${DEMO_PORT:-8765}
OUT=${DEMO_OUT:-demo_out}
RUN="$OUT/run"
STEPS=${DEMO_STEPS:-300}
export SAMPLE_URL="http://127.0.0.1:$PORT" DEMO_OUT="$OUT"
export XC_API_KEY=${XC_API_KEY:-sample-archive-key}   # the sample archive accepts any key
mkdir -p "$OUT"
ready="$OUT/.server-url"
rm -f "$ready"
"$BIN/bestiary" serve-sample --port "$PORT" --ready-file "$ready" > "$OUT/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$ready" ] && break; kill -0 $server 2>/dev/null || { cat "$OUT/server.log"; exit 1; }; sleep 0.1; done

echo "== build (crawl, enrich, caption, shard) from $SAMPLE_URL"
"$BIN/bestiary" build configs/demo.yaml   # a line per stage with counts and rates (stderr), then the summary
test -s "$OUT/shards/manifest.json"
echo "== verify"
"$BIN/bestiary" verify "$OUT" | tail -n 3
kill $server 2>/dev/null || true

echo "== train ($STEPS steps on the CPU)"
resume=""
[ -f "$RUN/checkpoint.pt" ] && resume="--resume"
"$BIN/bestiary" train --shards "$OUT/shards" --out "$RUN" --steps "$STEPS" --trait-loss 0.2 $resume
echo "== eval"
"$BIN/bestiary" eval --checkpoint "$RUN/checkpoint.pt" --shards "$OUT/shards" --out "$RUN/eval.json"
cat <<MSG

Done. Where everything is:
  $OUT/catalog/          recordings, images, resolutions, taxa, traits, captions, probes (Parquet folders)
  $OUT/raw/              the raw archive pages (JSONL.gz), the source of truth
  $OUT/shards/           WebDataset tars, manifest.json, sizes.json
  $OUT/rejects/          every record that did not become a sample, with its reason
  $OUT/stats.json        per-stage counts (accounting.balanced must be true)
  $OUT/README.md         the dataset card
  $RUN/checkpoint.pt     the trained model; $RUN/log.csv the training log
  $RUN/eval.json         the benchmark report printed above
MSG
