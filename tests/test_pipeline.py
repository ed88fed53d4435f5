"""A real Beam build end to end on a tiny config against the sample archive server."""
import glob
import io
import json
import os
import tarfile

import pyarrow as pa
import pytest
import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image

from bestiary.captioning.templates import KINDS

from bestiary.media.audio import read_clip
from bestiary.pipelines.build import STAGES, build, stage_done
from bestiary.pipelines.verify import verify
from bestiary.schemas.config import parse_config
from bestiary.schemas.records import CATALOG_COLUMNS, REJECT_SCHEMA
from tests.conftest import TEST_KEY, bomb_png, tiny_config


def test_catalog_follows_the_contract(tiny_build):
    cfg, _ = tiny_build
    for name in ("recordings", "images"):
        table = pq.read_table(os.path.join(cfg.out, "catalog", name))
        assert table.column_names == CATALOG_COLUMNS
        rows = table.to_pylist()
        assert rows and len({r["key"] for r in rows}) == len(rows)  # overlapping pages kept once
        assert all(r["key"] == f"{r['source']}:{r['source_id']}" for r in rows)
    audio = pq.read_table(os.path.join(cfg.out, "catalog", "recordings")).to_pylist()
    assert {r["source"] for r in audio} == {"xeno-canto", "inaturalist", "macaulay", "gbif"}
    assert pq.read_table(os.path.join(cfg.out, "rejects")).schema.names == REJECT_SCHEMA.names


def test_stats_add_up_and_rejects_have_reasons(tiny_build):
    cfg, stats = tiny_build
    acc = stats["accounting"]
    assert acc["balanced"] and acc["records_crawled"] == acc["recordings_in_samples"] + acc["records_rejected"]
    with open(os.path.join(cfg.out, "stats.json")) as fh:
        assert json.load(fh)["accounting"] == acc
    rejects = pq.read_table(os.path.join(cfg.out, "rejects")).to_pylist()
    assert all(r["reason"] and r["stage"] for r in rejects)
    assert any(r["reason"] == "license_not_allowed" for r in rejects)  # ND and all-rights-reserved sounds
    assert stats["crawl"]["duplicates_dropped"] > 0  # iNaturalist's sound and photo queries overlap
    assert stats["crawl"]["partitions_failed"] == []


def test_shards_have_four_parts_and_read_back_with_webdataset(tiny_build):
    cfg, stats = tiny_build
    with open(os.path.join(cfg.out, "shards", "manifest.json")) as fh:
        manifest = json.load(fh)
    splits = manifest["splits"]
    assert {"train", "test", "unseen"} <= set(splits)
    assert all(v["shards"] >= 2 for v in splits.values() if v["samples"] >= 2)
    assert set(splits["unseen"]["species"]).isdisjoint(splits["train"]["species"])
    urls = [os.path.join(cfg.out, "shards", s["file"]) for s in manifest["shards"]]
    n = 0
    for sample in wds.WebDataset(urls, shardshuffle=False):
        assert {"flac", "jpg", "txt", "json"} <= set(sample)
        clip, rate = read_clip(sample["flac"])
        assert rate == 48000 and len(clip) == 480000
        assert Image.open(io.BytesIO(sample["jpg"])).mode == "RGB"
        meta = json.loads(sample["json"])
        assert meta["key"] == sample["__key__"] and meta["license"] != "unknown" and meta["attribution"]
        assert meta["taxon"]["lineage"]["family"] == "Strigidae" and meta["taxon"]["lineage_ids"]["species"]
        assert sample["txt"].decode() in [c["text"] for c in meta["captions"]]
        assert [c["kind"] for c in meta["captions"]] == [*KINDS, "traits"] and meta["image"]["pairing"] in ("same_observation", "same_species")
        n += 1
    assert n == stats["shard"]["samples"] == sum(s["samples"] for s in manifest["shards"])
    with open(os.path.join(cfg.out, "shards", "sizes.json")) as fh:
        assert sum(json.load(fh).values()) == n
    assert verify(cfg.out)["ok"]


def test_tars_are_deterministic_wds_tars(tiny_build):
    cfg, _ = tiny_build
    path = sorted(glob.glob(os.path.join(cfg.out, "shards", "*.tar")))[0]
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in members)
    names = [m.name for m in members]
    keys = [n.split(".")[0] for n in names]
    assert keys == sorted(keys)  # each sample's members adjacent, samples in key order
    assert not glob.glob(os.path.join(cfg.out, "shards", "*.tmp*"))


def test_second_build_skips_and_a_fresh_build_is_byte_identical(tiny_build, archive_server, tmp_path):
    cfg, stats = tiny_build
    assert all(stage_done(cfg, s) for s in STAGES)
    with open(os.path.join(cfg.out, "shards", "manifest.json"), "rb") as fh:
        manifest = fh.read()
    again = build(cfg)
    assert again["accounting"] == stats["accounting"]
    with open(os.path.join(cfg.out, "shards", "manifest.json"), "rb") as fh:
        assert fh.read() == manifest
    _, url = archive_server
    fresh = parse_config(tiny_config(url, str(tmp_path / "fresh")))
    build(fresh)
    with open(os.path.join(fresh.out, "shards", "manifest.json"), "rb") as fh:
        assert fh.read() == manifest  # same inputs and config: identical manifest, hence identical tar sha256s


def test_api_key_never_reaches_outputs(tiny_build):
    cfg, _ = tiny_build
    needle = TEST_KEY.encode()
    for path in glob.glob(os.path.join(cfg.out, "**", "*"), recursive=True):
        if os.path.isfile(path):
            with open(path, "rb") as fh:
                data = fh.read()
            if path.endswith(".gz"):
                import gzip
                data = gzip.decompress(data)
            assert needle not in data, path


def test_mirrored_recordings_are_kept_once(tiny_build):
    cfg, stats = tiny_build
    rejects = pq.read_table(os.path.join(cfg.out, "rejects")).to_pylist()
    dups = [r for r in rejects if r["reason"] in ("duplicate_audio", "near_duplicate_audio")]
    assert dups, stats["rejects_by_reason"]
    for d in dups:  # the Macaulay re-upload goes, the Xeno-canto original stays
        assert d["key"].startswith("macaulay:") and d["detail"].startswith("of xeno-canto:")


def _wav(data, rate, channels=1):
    import numpy as np
    import soundfile as sf
    buf = io.BytesIO()
    sf.write(buf, np.asarray(data, dtype=np.float32).reshape(-1, channels), rate, format="WAV")
    return buf.getvalue()


def test_bad_media_end_as_rejects_and_the_build_goes_on(archive_server, tmp_path):
    import numpy as np
    from bestiary.sample_archive.generate import render_audio, render_image
    state, url = archive_server
    owls = {"Strix", "Bubo", "Athene"}
    xc = [r for r in state.archive.xc if r.species.genus in owls and "nd" not in r.license]
    photos = [p for o in state.archive.inat if o.species.genus in owls for p in o.photos if p.license]
    mp3 = next(render_audio(r)[0] for r in xc if r.fmt == "mp3")
    tone = 0.3 * np.sin(np.arange(48000 * 12) * 0.05)
    cmyk = io.BytesIO()
    Image.open(io.BytesIO(render_image(photos[1]))).convert("CMYK").save(cmyk, format="JPEG")
    cases = {  # record -> (body, content type, declared length), expected reason (None: must succeed)
        ("xc", xc[0].id): ((mp3[: len(mp3) // 3], "audio/mpeg", len(mp3)), "http_body_incomplete"),
        ("xc", xc[1].id): ((b"ID3\x03\x00" + bytes(range(256)) * 40, "audio/mpeg", None), "undecodable_audio"),
        ("xc", xc[2].id): ((b"", "audio/mpeg", None), "empty_media"),
        ("xc", xc[3].id): ((_wav(tone[:3000], 1000), "audio/x-wav", None), "sample_rate_too_low"),
        ("xc", xc[4].id): ((b"<html><body>Service unavailable</body></html>", "text/html", None), "bad_content_type"),
        ("xc", xc[5].id): ((_wav(np.repeat(np.resize(tone, int(xc[5].seconds * 48000))[:, None], 8, axis=1), 48000, 8),
                            "audio/x-wav", None), None),
        ("xc", xc[6].id): ((mp3[: len(mp3) // 4], "audio/mpeg", None), "truncated_audio"),
        ("inat", photos[0].id): ((bomb_png(), "image/png", None), "image_too_large"),
        ("inat", photos[1].id): ((cmyk.getvalue(), "image/jpeg", None), None),
    }
    state.media_override.update({k: v for k, (v, _) in cases.items()})
    try:
        cfg = parse_config(tiny_config(url, str(tmp_path / "bad")))
        stats = build(cfg)
    finally:
        for k in cases:
            state.media_override.pop(k, None)
    assert stats["accounting"]["balanced"]
    rejects = {r["key"]: r for r in pq.read_table(os.path.join(cfg.out, "rejects")).to_pylist()}
    prefix = {"xc": "xeno-canto:", "inat": "inaturalist:photo-"}
    for (archive, rid), (_, reason) in cases.items():
        key = prefix[archive] + str(rid)
        if reason is None:
            assert key not in rejects, rejects.get(key)
        else:
            assert rejects[key]["reason"] == reason, (key, rejects[key])
    metas = [json.loads(s["json"]) for s in wds.WebDataset(
        sorted(glob.glob(os.path.join(cfg.out, "shards", "*.tar"))), shardshuffle=False)]
    eight = [m for m in metas if m["record_key"] == f"xeno-canto:{xc[5].id}"]
    assert eight and eight[0]["audio"]["original_channels"] == 8  # downmixed, not rejected
    assert verify(cfg.out)["ok"]


def test_sample_json_matches_the_documented_structure(tiny_build):
    from bestiary.schemas.sample import SAMPLE_JSON
    cfg, _ = tiny_build
    url = sorted(glob.glob(os.path.join(cfg.out, "shards", "train-*.tar")))[0]
    meta = json.loads(next(iter(wds.WebDataset(url, shardshuffle=False)))["json"])

    def same_keys(spec, obj, where):
        if isinstance(spec, dict):
            assert set(obj) == set(spec), (where, set(obj) ^ set(spec))
            for k in spec:
                if obj[k] is not None:
                    same_keys(spec[k], obj[k], f"{where}.{k}")
    spec = {**SAMPLE_JSON, "captions": None}
    same_keys(spec, {**meta, "captions": None}, "json")
    assert {c["kind"] for c in meta["captions"]} >= {"common", "scientific", "taxonomy"}


def test_shards_load_with_hugging_face_datasets(tiny_build, tmp_path):
    import datasets
    from bestiary.schemas.sample import hf_features
    cfg, stats = tiny_build
    files = {split: sorted(glob.glob(os.path.join(cfg.out, "shards", f"{split}-*.tar"))) for split in ("train", "test")}
    ds = datasets.load_dataset("webdataset", data_files=files, features=hf_features(),
                               cache_dir=str(tmp_path / "hf"))
    assert ds["train"].num_rows == stats["shard"]["samples_by_split"]["train"]
    row = ds["train"][0]
    clip, rate = read_clip(row["flac"])  # bytes as written, decoded with soundfile, not torchcodec
    assert rate == 48000 and len(clip) == 480000
    assert row["jpg"].mode == "RGB" and row["json"]["key"] == row["__key__"]
    assert row["txt"] in [c["text"] for c in row["json"]["captions"]]


def test_dataset_card_and_plots(tiny_build):
    cfg, stats = tiny_build
    with open(os.path.join(cfg.out, "README.md")) as fh:
        card = fh.read()
    assert "| train |" in card and "balanced" in card
    for name in ("species_long_tail", "durations", "licences", "locations"):
        assert f"card/{name}.png" in card
        with Image.open(os.path.join(cfg.out, "card", f"{name}.png")) as img:
            assert img.format == "PNG" and img.size[0] > 300


def test_tar_writer_matches_tarfile_byte_for_byte():
    from bestiary.pipelines.materialize import write_tar
    samples = [("b_2_00000000", {"txt": b"x" * 700, "flac": b"\x00\x01" * 3000}), ("a_1_00010000", {"json": b"{}"})]
    ours = write_tar(samples)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, body in [("a_1_00010000.json", b"{}"), ("b_2_00000000.flac", b"\x00\x01" * 3000),
                           ("b_2_00000000.txt", b"x" * 700)]:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = len(body), 0, 0o644, 0, 0, "", ""
            tar.addfile(info, io.BytesIO(body))
    assert ours == buf.getvalue()


def test_a_leak_fails_the_build_before_anything_is_published(tiny_build, tmp_path):
    import shutil
    import pytest
    from bestiary.pipelines.build import finalize
    from bestiary.pipelines.errors import LeakError
    from bestiary.pipelines.runs import context
    cfg, _ = tiny_build
    copy = tmp_path / "copy"
    shutil.copytree(cfg.out, copy, ignore=shutil.ignore_patterns("*.tar", "cache", "raw"))
    os.remove(copy / "shards" / "manifest.json")
    bad = parse_config(tiny_config("http://127.0.0.1:1", str(copy)))
    test_members = sorted((copy / "work" / "shards").glob("test-*.members.parquet"))[0]
    train_members = sorted((copy / "work" / "shards").glob("train-*.members.parquet"))[0]
    stolen = [m for p in sorted((copy / "work" / "shards").glob("*.members.parquet")) if not p.name.startswith("test-")
              for m in pq.read_table(p).to_pylist()]
    assert len(stolen) > 20 and train_members
    rows = pq.read_table(test_members).to_pylist() + [{**m, "record": f"xeno-canto:{i}", "split": "test"}
                                                      for i, m in enumerate(stolen)]
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(test_members)), test_members)  # observations on two sides
    with pytest.raises(LeakError, match=r"leak\(s\) across splits"):
        finalize(context(bad, "full"))
    assert not (copy / "shards" / "manifest.json").exists()
    summary = json.load(open(copy / "work" / "finalize.json"))
    # every leak counted, 20 of them kept (the summary stays small however broken the build)
    assert summary["leak_count"] >= len(stolen) and summary["leaks"] == sorted(summary["leaks"]) and len(summary["leaks"]) == 20


def test_gbif_mirrors_are_kept_once_and_gbif_only_records_kept(tiny_build):
    cfg, _ = tiny_build
    audio = pq.read_table(os.path.join(cfg.out, "catalog", "recordings")).to_pylist()
    rejects = {r["key"]: r for r in pq.read_table(os.path.join(cfg.out, "rejects")).to_pylist()}
    gbif = [r for r in audio if r["source"] == "gbif"]
    mirrors = [r for r in gbif if r["mirror_of"]]
    assert mirrors and any(r["mirror_of"].startswith("xeno-canto:") for r in mirrors)
    assert any(r["mirror_of"].startswith("inaturalist:") for r in mirrors)
    keys = {r["key"] for r in audio} | {r["observation_id"] for r in audio}
    for r in mirrors:
        if r["mirror_of"] in keys:
            assert rejects[r["key"]]["reason"] == "mirror_of_crawled_record"
    only = [r for r in gbif if not r["mirror_of"]]
    assert only and all(r["key"] not in rejects for r in only)  # a sound archive GBIF alone publishes


def test_rebuild_offline_from_raw_pages_and_caches_is_byte_identical(tiny_build, archive_server, tmp_path):
    import shutil
    cfg, stats = tiny_build
    state, url = archive_server
    copy = tmp_path / "copy"
    shutil.copytree(cfg.out, copy)
    with open(copy / "shards" / "manifest.json", "rb") as fh:
        before = fh.read()
    asked = sum(state.counts.values())
    again = build(parse_config(tiny_config(url, str(copy))), rebuild=True)
    assert sum(state.counts.values()) == asked  # not one request: pages, taxa and media all from the caches
    with open(copy / "shards" / "manifest.json", "rb") as fh:
        assert fh.read() == before  # every tar's sha256 and the manifest identical
    assert again["accounting"] == stats["accounting"]


def graph_of(transform: "beam.PTransform"):
    """A composite's graph on its own (the runner API proto), built and never run."""
    import apache_beam as beam
    p = beam.Pipeline()
    _ = p | "t" >> transform
    return p.to_runner_api()


def side_input_producers(transform: "beam.PTransform") -> set[str]:
    """The names of the transforms whose outputs a composite's graph reads as side inputs."""
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2
    proto = graph_of(transform)
    producer = {pc: t.unique_name for t in proto.components.transforms.values() for pc in t.outputs.values()
                if not t.subtransforms}
    made = set()
    for t in proto.components.transforms.values():
        if t.spec.urn == common_urns.primitives.PAR_DO.urn:
            payload = beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload)
            made |= {producer[t.inputs[tag]] for tag in payload.side_inputs}
    return made


def test_plan_and_finalize_side_inputs_are_bounded_by_species_shards_or_constants(tiny_build):
    """An incremental run's plan and finalize graphs read as side inputs only what is bounded: counters of
    fixed keys, per-species tables, the split histogram's buckets, the planned shard names, the last
    manifest's per-shard tombstone entries, 20 leaks and their count, WriteTable's totals.  The run's
    tombstones (once one list, read whole by finalize) and the leaks (once all of them) are not."""
    from bestiary.pipelines.context import RunContext
    from bestiary.pipelines.finalize import Finalize
    from bestiary.pipelines.shard import PlanShards
    cfg, _ = tiny_build
    ctx = RunContext(cfg, run=2, mode="incremental")
    bounded = {"plan": {"as dict", "reasons dict",            # counters of fixed keys
                        "taxa merged", "scarce first", "obs only",   # one entry per species
                        "cuts", "histogram",                  # per (split, bucket): a fixed count
                        "planned list",                       # the shard names
                        "its tombstones",                     # the last manifest's entries, one per shard
                        "total"},                             # WriteTable's (rows, bytes)
               "finalize": {"audio dict", "images dict", "card dict", "reasons dict",  # fixed keys, species, bins
                            "first leaks", "leak count", "total"}}
    for name, transform in (("plan", PlanShards(ctx)),
                            ("finalize", Finalize(ctx, {"train-000000.tar": "tombstones/train-000000.v2.json"}))):
        made = side_input_producers(transform)
        assert len(made) >= 8, (name, made)
        assert [n for n in made if not bounded[name] & set(n.split("/"))] == [], name
    assert any("its tombstones" in n for n in side_input_producers(PlanShards(ctx)))


def test_no_stage_pays_for_a_global_combines_default_branch(tiny_build):
    """A global combine's default branch (a Create, a side input and a ParDo for the empty input's value) is
    five transforms and a stage; the stages name the empty value at the reader instead (singletons.one).  Only
    the Bloom filters keep theirs: their empty value is a 2 MiB filter, which would travel in the graph."""
    from bestiary.pipelines.caption import Caption
    from bestiary.pipelines.context import RunContext
    from bestiary.pipelines.crawl import Crawl
    from bestiary.pipelines.enrich import Enrich
    from bestiary.pipelines.finalize import Finalize
    from bestiary.pipelines.shard import PlanShards
    from bestiary.pipelines.runs import partitions
    cfg, _ = tiny_build
    ctx = RunContext(cfg, run=2, mode="incremental", partitions=tuple(partitions(cfg)))
    blooms = {"filter 1", "filter 2", "id filter"}
    for name, transform in (("crawl", Crawl(ctx)), ("enrich", Enrich(ctx)), ("caption", Caption(ctx)),
                            ("plan", PlanShards(ctx)), ("finalize", Finalize(ctx, {}))):
        leaves = [t.unique_name for t in graph_of(transform).components.transforms.values() if not t.subtransforms]
        defaults = [n for n in leaves if ("/DoOnce/" in n or n.endswith("/InjectDefault")) and not blooms & set(n.split("/"))]
        assert len(leaves) > 20 and defaults == [], (name, defaults)


def test_stage_options_parse_each_options_class_once_and_behave_as_beams(tiny_build):
    """Beam asks a pipeline's options for a view a few times per applied transform, and each view used to
    build and run an argparse parser (6 CPU-s of a demo build's driver).  The stages' options keep one view
    per class: building the plan graph parses a handful of times, not thousands; values set through one view
    are seen through every other, a deep copy (what beam.Pipeline keeps) and a pickle carry them and stay
    apart, and the type checks those views switch on still run."""
    import copy
    import pickle

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, TypeOptions
    from apache_beam.typehints.decorators import TypeCheckError

    from bestiary.pipelines.context import RunContext
    from bestiary.pipelines.runner import pipeline_options
    from bestiary.pipelines.runs import partitions
    from bestiary.pipelines.shard import PlanShards
    cfg, _ = tiny_build
    opts = pipeline_options(cfg.runner)
    assert opts.view_as(TypeOptions) is opts.view_as(TypeOptions)
    opts.view_as(StandardOptions).runner = "X"
    opts.view_as(TypeOptions).type_check_strictness = "ALL_REQUIRED"
    assert opts.get_all_options()["type_check_strictness"] == "ALL_REQUIRED" and opts.view_as(StandardOptions).runner == "X"
    for twin in (copy.deepcopy(opts), pickle.loads(pickle.dumps(opts))):
        assert twin.view_as(TypeOptions).type_check_strictness == "ALL_REQUIRED"
        twin.view_as(TypeOptions).type_check_strictness = "DEFAULT_TO_ANY"
        assert opts.view_as(TypeOptions).type_check_strictness == "ALL_REQUIRED"

    parsed = []
    original = PipelineOptions.__init__

    def counting(self, *args, **kwargs):
        parsed.append(type(self).__name__)
        original(self, *args, **kwargs)

    PipelineOptions.__init__ = counting
    try:
        ctx = RunContext(cfg, run=1, mode="full", partitions=tuple(partitions(cfg)))
        p = beam.Pipeline(options=pipeline_options(cfg.runner))
        _ = p | "plan" >> PlanShards(ctx)
        transforms = len(p.to_runner_api().components.transforms)
    finally:
        PipelineOptions.__init__ = original
    assert transforms > 300 and len(parsed) < 60, (transforms, len(parsed))

    with pytest.raises(TypeCheckError):   # the pipeline type check reads its switch through a kept view
        with_checks = beam.Pipeline(options=pipeline_options(cfg.runner))
        _ = with_checks | beam.Create([1, 2]) | beam.Map(lambda x: x).with_input_types(str)


def test_kept_dofn_specs_are_beams_answers_worked_out_once_per_dofn(tiny_build):
    """Beam works out a DoFn's state and timer specs up to six times for every ParDo it applies and serializes,
    each time inspecting every method's signature (a fifth of a demo build's driver CPU).  Inside kept_specs
    each DoFn's are worked out once; the answers are Beam's (a stateful DoFn's specs, its errors), copies
    that a caller cannot spoil, and Beam's function is back when the block ends."""
    import apache_beam as beam
    from apache_beam.coders import VarIntCoder
    from apache_beam.transforms import userstate
    from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer
    from apache_beam.transforms.timeutil import TimeDomain

    from bestiary.pipelines.context import RunContext
    from bestiary.pipelines.dofn_specs import kept_specs
    from bestiary.pipelines.runner import pipeline, pipeline_options
    from bestiary.pipelines.runs import partitions
    from bestiary.pipelines.shard import PlanShards
    cfg, _ = tiny_build
    beams = userstate.get_dofn_specs
    asked: list[int] = []

    def counting(dofn):
        asked.append(id(dofn))
        return beams(dofn)

    def plan_graph() -> int:
        ctx = RunContext(cfg, run=1, mode="full", partitions=tuple(partitions(cfg)))
        p = beam.Pipeline(options=pipeline_options(cfg.runner))
        _ = p | "plan" >> PlanShards(ctx)
        return len(p.to_runner_api().components.transforms)

    userstate.get_dofn_specs = counting
    try:
        plan_graph()
        every_time = len(asked)
        asked.clear()
        with kept_specs():
            transforms = plan_graph()
        once = len(asked)
    finally:
        userstate.get_dofn_specs = beams
    assert transforms > 300 and once == len(set(asked)) and every_time > 3 * once, (transforms, every_time, once)

    class Stateful(beam.DoFn):
        SEEN = BagStateSpec("seen", VarIntCoder())
        FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)

        def process(self, kv, seen=beam.DoFn.StateParam(SEEN), flush=beam.DoFn.TimerParam(FLUSH)):
            seen.add(kv[1])
            flush.set(beam.window.GlobalWindow().max_timestamp())

        @on_timer(FLUSH)
        def flushed(self, key=beam.DoFn.KeyParam, seen=beam.DoFn.StateParam(SEEN)):
            yield key, sorted(seen.read())

    class Twice(beam.DoFn):   # two parameters for one state: Beam refuses it
        S = BagStateSpec("s", VarIntCoder())

        def process(self, x, a=beam.DoFn.StateParam(S), b=beam.DoFn.StateParam(S)):
            yield x

    dofn = Stateful()
    with kept_specs():
        assert userstate.get_dofn_specs is not beams
        first = userstate.get_dofn_specs(dofn)
        assert first == beams(dofn) == ({Stateful.SEEN}, {Stateful.FLUSH})
        first[0].clear()
        assert userstate.get_dofn_specs(dofn) == ({Stateful.SEEN}, {Stateful.FLUSH})
        for _ in range(2):
            with pytest.raises(ValueError, match="duplicate"):
                userstate.get_dofn_specs(Twice())
    assert userstate.get_dofn_specs is beams

    out = os.path.join(cfg.out, "..", "stateful")
    with pipeline(cfg.runner, "stateful") as p:   # a stateful DoFn still runs as one: state per key, timers
        _ = (p | beam.Create([("a", 2), ("b", 5), ("a", 1), ("b", 3), ("a", 7)]) | beam.ParDo(Stateful())
             | beam.MapTuple(lambda k, v: f"{k} {v}") | beam.io.WriteToText(out, num_shards=1))
    assert userstate.get_dofn_specs is beams
    with open(out + "-00000-of-00001") as fh:
        assert sorted(fh.read().splitlines()) == ["a [1, 2, 7]", "b [3, 5]"]
