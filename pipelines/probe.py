"""Probe: every selected medium fetched once into the cache and decoded once.

Media already in the cache go straight to analysis, on any worker; the rest
are fetched host-keyed (one budget per host).  Analysis decodes a recording a
single time for its PCM hash, its fingerprint and its clips (kept as a clip
pack for the shard writer), and an image for its dHash and its JPEG.  A probe
row records the result, or the reason the medium is unusable.
"""
from __future__ import annotations

import hashlib
import json

import apache_beam as beam
import pyarrow as pa

from bestiary.connectors.http import AUDIO_TYPES, IMAGE_TYPES, FetchError
from bestiary.media.audio import AudioError, analyze_audio
from bestiary.media.derived import pack_clips
from bestiary.media.fingerprints import dhash
from bestiary.media.images import ImageError, prepare_image
from bestiary.pipelines import io
from bestiary.pipelines.cache import MediaCache
from bestiary.pipelines.context import RunContext
from bestiary.pipelines.hosts import HostWork, host_slot
from bestiary.schemas.config import MediaConfig

ANALYSIS_VERSION = "a4"   # bump when clip choice or fingerprints change: derived files are then made again
PROBE_SCHEMA = pa.schema([
    ("kind", pa.string()), ("key", pa.string()), ("url", pa.string()), ("media_fp", pa.string()),
    ("blob", pa.string()), ("pcm_sha256", pa.string()), ("codes", pa.binary()), ("sample_rate", pa.int64()),
    ("channels", pa.int64()), ("seconds", pa.float64()), ("clips", pa.int64()), ("dhash", pa.string()),
    ("width", pa.int64()), ("height", pa.int64()), ("derived", pa.string()), ("reason", pa.string()),
    ("detail", pa.string())])


def media_fingerprint(media: MediaConfig, kind: str) -> str:
    """What a medium's derived data depends on besides its bytes."""
    fields = (["sample_rate", "clip_seconds", "max_clips_per_recording", "min_seconds", "min_source_rate",
               "ultrasonic", "ultrasonic_share", "time_expansion"]
              if kind == "audio" else ["image_size"])
    blob = json.dumps({"v": ANALYSIS_VERSION, **{f: getattr(media, f) for f in fields}}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def derived_path(blob: str, fp: str, kind: str) -> str:
    """Where a medium's clip pack or JPEG lives, relative to the output folder (so a moved output still works)."""
    return "/".join(("cache", "derived", blob[:2], f"{blob}-{fp}.{'clips' if kind == 'audio' else 'jpg'}"))


def probe_item(row: dict, kind: str, media: MediaConfig) -> dict:
    return {"kind": kind, "key": row["key"], "url": row["media_url"], "media_fp": media_fingerprint(media, kind),
            "declared": row.get("duration_s")}


def reads_paths(key: str) -> bool:
    """Whether the medium of this catalog key may be a path: only a source that says so (`files`)."""
    from bestiary.connectors import registry
    try:
        return registry.get(key.split(":", 1)[0]).local_media
    except KeyError:
        return False


def guarded(where: str) -> None:
    """Count a failure only the last-resort guard caught (a bug or an input nobody foresaw)."""
    beam.metrics.Metrics.counter("guarded", where).inc()


def failed(item: dict, reason: str, detail: str) -> dict:
    return {"kind": item["kind"], "key": item["key"], "url": item["url"], "media_fp": item["media_fp"],
            "reason": reason, "detail": detail[:500]}


class CheckCache(beam.DoFn):
    """Media in the cache go on with their blob; the others are keyed by host for fetching."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    def setup(self) -> None:
        self.cache = MediaCache(self.ctx.path("cache", "media"))

    def process(self, item: dict):
        try:
            blob = self.cache.lookup(item["url"])
        except Exception:  # noqa: BLE001 - an unreadable cache entry: fetch the medium again
            blob = None
        if blob is not None:
            yield {**item, "blob": io.basename(blob)}
        elif self.ctx.cfg.http.offline:
            yield failed(item, "offline", "not in the media cache")
        else:
            yield beam.pvalue.TaggedOutput("fetch", (host_slot(item["url"], item["key"], self.ctx.policy,
                                                               self.ctx.cfg.http.host_slots), item))


class FetchMedia(HostWork):
    """One host's media into the content-addressed cache; a medium that fails for good is a probe row with
    the reason."""

    def __init__(self, ctx: RunContext):
        super().__init__(ctx.policy, ctx.cfg.http.host_threads)
        self.ctx = ctx

    def setup(self) -> None:
        super().setup()
        self.cache = MediaCache(self.ctx.path("cache", "media"))

    def handle(self, item: dict):
        try:
            body = self.cache.fetch(self.client, item["url"], expect=AUDIO_TYPES if item["kind"] == "audio" else IMAGE_TYPES,
                                    paths=reads_paths(item["key"]))
        except FetchError as err:
            yield failed(item, err.reason, err.detail)
            return
        except Exception as err:  # noqa: BLE001 - the last guard: a medium's fault is its reject
            guarded("fetch")
            yield failed(item, "fetch_error", f"{type(err).__name__}: {err}")
            return
        yield {**item, "blob": hashlib.sha256(body).hexdigest()}


class AnalyzeMedia(beam.DoFn):
    """A cached medium -> its probe row; the clip pack or the JPEG goes to the derived cache."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    def process(self, item: dict):
        if item.get("reason"):
            yield item
            return
        try:
            yield self._analyze(item)
        except (AudioError, ImageError) as err:
            yield failed(item, err.reason, err.detail)
        except Exception as err:  # noqa: BLE001 - the last guard: a medium's fault is its reject
            guarded("analyse")
            yield failed(item, "analysis_error", f"{type(err).__name__}: {err}")

    def _analyze(self, item: dict) -> dict:
        m, kind = self.ctx.cfg.media, item["kind"]
        body = io.read_bytes(self.ctx.path("cache", "media", "blobs", item["blob"]))
        out = {k: item[k] for k in ("kind", "key", "url", "media_fp", "blob")}
        rel = derived_path(item["blob"], item["media_fp"], kind)
        path = self.ctx.path(*rel.split("/"))
        if kind == "audio":
            a = analyze_audio(body, m.sample_rate, m.clip_seconds, m.max_clips_per_recording, m.min_seconds,
                              m.min_source_rate, item.get("declared"), m.ultrasonic_policy())
            if not a.clips:
                raise AudioError("no_usable_clip", "every window silent or clipped")
            io.write_bytes(path, pack_clips(a.info, a.clips))
            return {**out, "pcm_sha256": a.pcm_sha256, "codes": a.codes.tobytes(), "sample_rate": a.info.sample_rate,
                    "channels": a.info.channels, "seconds": a.info.seconds, "clips": len(a.clips), "derived": rel}
        try:
            h = f"{dhash(body):016x}"
            jpg, size = prepare_image(body, m.image_size)
        except ImageError:
            raise
        except Exception as err:  # Pillow's many error types
            raise ImageError("undecodable_image", type(err).__name__) from None
        io.write_bytes(path, jpg)
        return {**out, "dhash": h, "width": size[0], "height": size[1], "derived": rel}


class Probe(beam.PTransform):
    """Probe items -> probe rows (fetched where needed, analysed once)."""

    def __init__(self, ctx: RunContext):
        super().__init__()
        self.ctx = ctx

    def expand(self, items):
        ctx = self.ctx
        checked = items | "in cache?" >> beam.ParDo(CheckCache(ctx)).with_outputs("fetch", main="cached")
        fetched = (checked.fetch | "host groups" >> beam.GroupByKey() | "fetch" >> beam.ParDo(FetchMedia(ctx)))
        # the analysis is most of a build's CPU: spread it over every worker (a stage's input arrives in
        # bundles of megabytes, and the probe items of a whole demo fit in one, which one worker would take)
        return ((checked.cached, fetched) | "to analyse" >> beam.Flatten()
                | "spread" >> beam.Reshuffle() | "analyse" >> beam.ParDo(AnalyzeMedia(ctx)))
