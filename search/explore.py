"""`bestiary explore`: a local web page over a built dataset (splits, species, rejects with reasons, the
card's plots) and, with an index, a search box whose results show a spectrogram, a player for the window,
captions and attribution.  Flask, server-rendered: nothing to build, no script from elsewhere."""
from __future__ import annotations

import json
import os
from functools import lru_cache

import pyarrow.parquet as pq
from flask import Flask, Response, abort, render_template_string, request

from bestiary.search.index import Index, SearchError, parse_bbox
from bestiary.search.spectrogram import spectrogram_png, wav_bytes

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bestiary · {{ title }}</title>
<style>
 body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 70em; padding: 0 1em; color: #222 }
 table { border-collapse: collapse; margin: .5em 0 1.5em } td, th { padding: .2em .8em; border-bottom: 1px solid #ddd;
 text-align: left } th { background: #f4f4f4 } .num { text-align: right } .plots img { max-width: 32em; margin: .3em }
 .result { display: flex; gap: 1em; border-bottom: 1px solid #ddd; padding: .8em 0 } .result img { width: 360px;
 height: 96px } .meta { flex: 1 } .caption { color: #555; font-style: italic } form input[type=text] { width: 26em }
 nav a { margin-right: 1em } .error { color: #a00 }
</style></head><body>
<nav><a href="/">dataset</a>{% if has_index %}<a href="/search">search</a>{% endif %}</nav>
<h1>{{ title }}</h1>
{{ body | safe }}
</body></html>"""

OVERVIEW = """
<p>{{ out }} · {{ samples }} samples in {{ shards }} shards · {{ hours }} h of audio · {{ species|length }} species</p>
{% if has_index %}
<form action="/search" method="get"><input type="text" name="q" placeholder="owl hooting at night">
<button type="submit">search</button></form>{% endif %}
<h2>Splits</h2>
<table><tr><th>split</th><th class="num">samples</th><th class="num">shards</th><th class="num">species</th></tr>
{% for name, s in splits %}<tr><td>{{ name }}</td><td class="num">{{ s.samples }}</td>
<td class="num">{{ s.shards }}</td><td class="num">{{ s.species|length }}</td></tr>{% endfor %}</table>
<h2>Species</h2>
<table><tr><th>scientific name</th><th>common name</th><th>family</th><th>splits</th></tr>
{% for sp in species %}<tr><td><i>{{ sp.name }}</i></td><td>{{ sp.common }}</td><td>{{ sp.family }}</td>
<td>{{ sp.splits|join(", ") }}</td></tr>{% endfor %}</table>
<h2>Rejects</h2>
<table><tr><th>stage / reason</th><th class="num">records</th></tr>
{% for reason, n in reasons %}<tr><td>{{ reason }}</td><td class="num">{{ n }}</td></tr>{% endfor %}</table>
{% if reject_rows %}<details><summary>first {{ reject_rows|length }} rejects</summary><table>
<tr><th>key</th><th>stage</th><th>reason</th><th>detail</th></tr>
{% for r in reject_rows %}<tr><td>{{ r.key }}</td><td>{{ r.stage }}</td><td>{{ r.reason }}</td><td>{{ r.detail }}</td>
</tr>{% endfor %}</table></details>{% endif %}
<h2>Card</h2><div class="plots">{% for p in plots %}<img src="/card/{{ p }}" alt="{{ p }}">{% endfor %}</div>
"""

RESULTS = """
<form id="search" action="/search" method="get">
<input type="text" id="q" name="q" value="{{ q }}" placeholder="owl hooting at night">
<input type="text" name="species" value="{{ species }}" placeholder="species (optional)" style="width:14em">
<input type="text" name="since" value="{{ since }}" placeholder="since YYYY-MM-DD" style="width:9em">
<input type="text" name="bbox" value="{{ bbox }}" placeholder="W,S,E,N" style="width:9em">
<button type="submit">search</button></form>
{% if error %}<p class="error">{{ error }}</p>{% endif %}
{% if q %}<p id="count">{{ hits|length }} windows</p>{% endif %}
{% for h in hits %}<div class="result" data-rank="{{ h.rank }}">
<img src="/spectrogram/{{ h.id }}.png" alt="spectrogram">
<div class="meta"><b>{{ h.rank }}.</b> score {{ "%.3f"|format(h.score) }} · <i>{{ h.species or "species unknown" }}</i>
{% if h.common_name %}({{ h.common_name }}){% endif %}<br>
{{ h.path|basename }}{% if h.sample_key %} [{{ h.sample_key }}]{% endif %} at {{ "%.1f"|format(h.offset_s) }} s
for {{ "%.1f"|format(h.seconds) }} s{% if h.recorded_on %} · {{ h.recorded_on }}{% endif %}<br>
{% for c in (h.captions or [])[:2] %}<span class="caption">{{ c }}</span><br>{% endfor %}
{% if h.attribution or h.license %}<small>{{ h.attribution or "" }} · {{ h.license or "licence unknown" }}</small><br>
{% endif %}<audio controls preload="metadata" src="/audio/{{ h.id }}.wav"></audio></div></div>{% endfor %}
"""


def create_app(out: str, index: str | None = None, checkpoint: str | None = None) -> Flask:
    """The explore app for a build's output folder and, optionally, an index to search."""
    if not os.path.exists(os.path.join(out, "shards", "manifest.json")):
        raise SearchError(f"{out}: no shards/manifest.json (a build's output folder)")
    app = Flask("bestiary.explore")
    app.jinja_env.filters["basename"] = os.path.basename
    idx = None
    if index:
        model = None
        if checkpoint:
            from bestiary.training.inference import Model
            model = Model.load(checkpoint)
        idx = Index.open(index, model=model)

    def page(title: str, template: str, **kw) -> str:
        body = render_template_string(template, has_index=idx is not None, **kw)
        return render_template_string(PAGE, title=title, body=body, has_index=idx is not None)

    @lru_cache(maxsize=1)
    def overview() -> dict:
        with open(os.path.join(out, "shards", "manifest.json")) as fh:
            manifest = json.load(fh)
        stats = {}
        if os.path.exists(os.path.join(out, "stats.json")):
            with open(os.path.join(out, "stats.json")) as fh:
                stats = json.load(fh)
        taxa = {}
        if os.path.isdir(os.path.join(out, "catalog", "taxa")):
            for r in pq.read_table(os.path.join(out, "catalog", "taxa"),
                                   columns=["taxon_id", "accepted_name", "common_name", "family"]).to_pylist():
                taxa[r["taxon_id"]] = r
        in_splits: dict[str, list[str]] = {}
        for split, s in sorted(manifest["splits"].items()):
            for t in s["species"]:
                in_splits.setdefault(t, []).append(split)
        species = sorted(({"name": taxa.get(t, {}).get("accepted_name") or t,
                           "common": taxa.get(t, {}).get("common_name") or "",
                           "family": taxa.get(t, {}).get("family") or "", "splits": sp}
                          for t, sp in in_splits.items()), key=lambda r: r["name"])
        rejects = []
        if os.path.isdir(os.path.join(out, "rejects")):
            rejects = pq.read_table(os.path.join(out, "rejects")).slice(0, 200).to_pylist()
        plots = sorted(f for f in os.listdir(os.path.join(out, "card")) if f.endswith(".png")) \
            if os.path.isdir(os.path.join(out, "card")) else []
        return {"splits": sorted((k, v) for k, v in manifest["splits"].items()), "species": species,
                "samples": sum(v["samples"] for v in manifest["splits"].values()),
                "shards": len(manifest["shards"]), "hours": (stats.get("shard") or {}).get("audio_hours", "?"),
                "reasons": sorted((stats.get("rejects_by_reason") or {}).items(), key=lambda kv: -kv[1]),
                "reject_rows": rejects, "plots": plots}

    @app.get("/")
    def home():
        return page("dataset", OVERVIEW, out=out, **overview())

    @app.get("/card/<name>")
    def card(name: str):
        if name not in overview()["plots"]:
            abort(404)
        with open(os.path.join(out, "card", name), "rb") as fh:
            return Response(fh.read(), mimetype="image/png")

    def hits_for(args) -> tuple[list[dict], str | None]:
        q = (args.get("q") or "").strip()
        if not q:
            return [], None
        if idx is None:
            return [], "no index: start explore with --index"
        try:
            species = [s.strip() for s in (args.get("species") or "").split(",") if s.strip()] or None
            bbox = parse_bbox(args["bbox"]) if args.get("bbox") else None
            return idx.search_text(q, top=min(int(args.get("top", 12)), 100), species=species,
                                   since=args.get("since") or None, bbox=bbox), None
        except (SearchError, ValueError) as err:
            return [], str(err)

    @app.get("/search")
    def search():
        hits, error = hits_for(request.args)
        return page("search", RESULTS, hits=hits, error=error, **{k: request.args.get(k, "")
                                                                  for k in ("q", "species", "since", "bbox")})

    @app.get("/api/search")
    def api_search():
        hits, error = hits_for(request.args)
        if error:
            return {"error": error}, 400
        return {"hits": hits}

    def window(wid: int) -> dict:
        if idx is None:
            abort(404)
        import pyarrow as pa
        import pyarrow.compute as pc
        rows = idx.windows.filter(pc.equal(idx.windows["id"], pa.scalar(wid, pa.uint64()))).to_pylist()
        if not rows:
            abort(404)
        return rows[0]

    @app.get("/audio/<int:wid>.wav")
    def audio(wid: int):
        samples, rate = idx.window_audio(window(wid)) if idx else abort(404)
        return Response(wav_bytes(samples, rate), mimetype="audio/wav")

    @app.get("/spectrogram/<int:wid>.png")
    def spectrogram(wid: int):
        samples, rate = idx.window_audio(window(wid)) if idx else abort(404)
        return Response(spectrogram_png(samples, rate), mimetype="image/png")

    return app


def serve(out: str, index: str | None, host: str, port: int, checkpoint: str | None = None) -> None:
    app = create_app(out, index, checkpoint)
    print(f"bestiary explore: http://{host}:{port}/ (Ctrl-C stops)")
    from werkzeug.serving import make_server
    server = make_server(host, port, app, threaded=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
