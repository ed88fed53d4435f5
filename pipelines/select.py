"""The gates a catalog row passes before its medium is fetched: not a mirror of a crawled record, an allowed
licence, a resolved species (and, for audio, a caption and a media URL).  Each is a per-record check after a
join by key; a row that fails one becomes a reject with the gate's reason."""
from __future__ import annotations

import apache_beam as beam

from bestiary.connectors.licenses import license_allowed, no_derivatives
from bestiary.pipelines.enrich import unresolved_reject
from bestiary.schemas.records import TAXON_RANKS, reject

AUDIO_COLUMNS = ["key", "source", "source_id", "observation_id", "media_type", "media_url", "media_format",
                 "scientific_name", "common_name", "license", "license_url", "attribution", "recordist", "lat", "lon",
                 "country", "recorded_on", "recorded_on_precision", "duration_s", "quality", "sound_type", "background_species", "mirror_of",
                 "crawl_run", "content_hash"]
IMAGE_COLUMNS = ["key", "source", "source_id", "observation_id", "media_type", "media_url", "license", "license_url",
                 "attribution", "recordist", "mirror_of", "crawl_run"]


def with_taxon_fields(row: dict, taxon: dict, method: str | None) -> dict:
    out = {**row, "taxon_id": taxon["taxon_id"], "accepted_name": taxon["accepted_name"],
           "taxon_common_name": taxon.get("common_name"), "method": method, "traits": taxon.get("traits") or {}}
    for r in TAXON_RANKS:
        out[r], out[f"{r}_id"] = taxon.get(r), taxon.get(f"{r}_id")
    return out


def gate(row: dict, res: dict | None, taxon: dict | None, mirror_of: str | None, allow: list[str],
         allow_nd: bool = False) -> dict | None:
    """The reject for a row that may not become (part of) a sample, or None."""
    if mirror_of:  # GBIF's copy of a record crawled from its archive
        return reject(row["key"], "select", "mirror_of_crawled_record", mirror_of)
    if no_derivatives(row["license"]) and not allow_nd:
        return reject(row["key"], "select", "license_no_derivatives", row["license"])
    if not license_allowed(row["license"], allow):
        return reject(row["key"], "select", "license_not_allowed", row["license"])
    if taxon is None:
        return unresolved_reject(row["key"], row.get("scientific_name") or row.get("given_id"), (res or {}).get("reason"))
    if not row.get("media_url"):
        return reject(row["key"], "select", "no_media_url", "")
    return None


class Gate(beam.DoFn):
    """(key, {row, res, cap, mirror}) -> the row with its taxon (and caption), or a tagged reject."""

    def __init__(self, allow: list[str], allow_nd: bool = False):
        self.allow, self.allow_nd = allow, allow_nd

    def process(self, item, taxa: dict):
        try:
            yield from self._gate(item, taxa)
        except Exception as err:  # noqa: BLE001 - the last guard: a record's fault is its reject
            beam.metrics.Metrics.counter("guarded", "select").inc()
            for row in item[1]["row"]:
                yield beam.pvalue.TaggedOutput("rejects", {**reject(row["key"], "select", "select_error",
                                                                    f"{type(err).__name__}: {err}"),
                                                           "_media_type": row.get("media_type")})

    def _gate(self, item, taxa: dict):
        _, got = item
        for row in got["row"]:
            res = next(iter(got["res"]), None)
            taxon = taxa.get(res["taxon_id"]) if res and res.get("taxon_id") else None
            bad = gate(row, res, taxon, next(iter(got["mirror"]), None), self.allow, self.allow_nd)
            if bad is None and row["media_type"] == "audio" and not got["cap"]:
                bad = reject(row["key"], "select", "no_caption", "")
            if bad:
                yield beam.pvalue.TaggedOutput("rejects", {**bad, "_media_type": row["media_type"]})
                continue
            # lineage, traits and captions join the few rows that are planned, at the end: what crosses the
            # shuffles between here and there stays small
            out = {**row, "taxon_id": taxon["taxon_id"], "method": res.get("method")}
            if row["media_type"] == "audio":
                yield out
            else:
                yield beam.pvalue.TaggedOutput("images", out)


def _mirror_verdict(item):
    original, got = item
    if got["present"]:
        for key in got["mirrors"]:
            yield key, original


def dress(item, taxa: dict):
    """A planned recording with its caption(s) and its taxon's lineage and traits."""
    _, got = item
    for cap in got["cap"]:
        for rec in got["rec"]:
            out = with_taxon_fields(rec, taxa[rec["taxon_id"]], rec.get("method"))
            out.update(caption=cap["default"], captions=cap["captions"])
            yield out


class SelectRows(beam.PTransform):
    """(audio rows, image rows, resolutions, caption keys) -> audio and images that pass (with their accepted
    taxon id), and rejects."""

    def __init__(self, allow: list[str], taxa, allow_nd: bool = False):
        super().__init__()
        self.allow, self.taxa, self.allow_nd = allow, taxa, allow_nd

    def expand(self, inputs):
        audio, images, res, caps = inputs
        rows = (audio, images) | "all rows" >> beam.Flatten()
        mirrors = ({"present": rows | "present" >> beam.FlatMap(lambda r: [(r["key"], 1), (r["observation_id"], 1)]),
                    "mirrors": rows | "mirrors" >> beam.FlatMap(
                        lambda r: [(r["mirror_of"], r["key"])] if r.get("mirror_of") else [])}
                   | "mirror join" >> beam.CoGroupByKey() | "mirror verdicts" >> beam.FlatMap(_mirror_verdict))
        return ({"row": rows | "row by key" >> beam.Map(lambda r: (r["key"], r)),
                 "res": res | "res by key" >> beam.Map(lambda r: (r["key"], r)),
                 "cap": caps | "cap by key" >> beam.Map(lambda r: (r["key"], r)),
                 "mirror": mirrors}
                | "gate join" >> beam.CoGroupByKey()
                | "gate" >> beam.ParDo(Gate(self.allow, self.allow_nd), self.taxa).with_outputs("images", "rejects", main="audio"))
