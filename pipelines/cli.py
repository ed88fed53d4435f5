"""The `bestiary` command line: serve-sample, crawl, enrich, caption, shard, build, verify, train, eval,
export, embed, classify, index, search, explore.

Configuration problems stop the command before any work, with one line and
exit code 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys

from bestiary import __version__
from bestiary.pipelines.errors import LeakError
from bestiary.schemas.config import ConfigError, load_config, parse_config
from bestiary.search.index import SearchError

EXIT_CONFIG = 2


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise ConfigError(f"--set expects KEY=VALUE, got {p!r}")
        k, v = p.split("=", 1)
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def sample_world(a):
    """The world serve-sample serves: the demo's 34 species, or --species N drawn from --taxonomy."""
    from bestiary.sample_archive.species import DEMO
    from bestiary.sample_archive.world import PRESETS, draw_world, read_table, trait_families, write_taxonomy
    if not a.species:
        if a.write_taxonomy:
            raise ConfigError("--write-taxonomy goes with --species N (the demo's files are in sample_archive/data)")
        return DEMO, PRESETS[a.difficulty]
    if not a.taxonomy or not os.path.isfile(a.taxonomy):
        raise ConfigError("--species N draws from an eBird/Clements taxonomy CSV: give it as --taxonomy "
                          f"({a.taxonomy or 'none given'}; `make bigworld` fetches one)")
    rows = read_table(open(a.taxonomy, "rb").read())
    prefer = trait_families(open(a.avonet, "rb").read()) if a.avonet else set()   # families with traits first
    world = draw_world(rows, a.species, seed=a.world_seed, prefer=prefer)
    if len(world.species) < a.species:
        raise ConfigError(f"{a.taxonomy} gives {len(world.species)} species of families large enough, not {a.species}")
    if a.write_taxonomy:
        write_taxonomy(world, a.write_taxonomy, a.avonet)
    return world, PRESETS[a.difficulty]


def cmd_serve_sample(a) -> int:
    from bestiary.sample_archive.server import make_server
    world, difficulty = sample_world(a)
    try:
        server, state = make_server(a.host, a.port, seed=a.seed, scale=a.scale, latency_ms=a.latency_ms,
                                    max_seconds=a.max_seconds, audio_format=a.audio_format, world=world,
                                    difficulty=difficulty)
    except OSError as err:
        raise ConfigError(f"cannot listen on {a.host}:{a.port} ({err.strerror}); choose another --port") from None
    for spec in a.fault or []:
        route, _, names = spec.partition("=")
        try:
            state.add_faults(route, *names.split(","))
        except ValueError as err:
            raise ConfigError(str(err)) from None
    host, port = server.server_address[:2]
    url = f"http://{host}:{port}"
    if a.ready_file:
        with open(a.ready_file, "w") as fh:
            fh.write(url + "\n")
    arch = state.archive
    print(f"sample archive (seed {a.seed}, {len(arch.species)} species in {len({s.genus for s in arch.species})} "
          f"genera and {len({s.family for s in arch.species})} families, {a.difficulty}) serving at {url}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _run_build(a, only) -> int:
    from bestiary.pipelines.build import build
    cfg = load_config(a.config, _overrides(a.set))
    stats = build(cfg, only=only, force=a.force, rebuild=getattr(a, "rebuild", False),
                  incremental=getattr(a, "incremental", False))
    if stats:
        acc = stats["accounting"]
        print(f"{stats['shard']['samples']} samples in {stats['shard']['shards']} shards -> {cfg.out}/shards; "
              f"records crawled {acc['records_crawled']} = in samples {acc['recordings_in_samples']} + "
              f"rejected {acc['records_rejected']} (balanced: {acc['balanced']})")
        llm = stats["caption"].get("llm")
        if llm:
            print(f"LLM captions ({llm['model']}): {llm['requests']} requests, {llm['cache_hits']} from cache, "
                  f"{llm['llm_captions']} new, fallbacks {llm['fallbacks'] or 'none'}; "
                  f"{llm['prompt_tokens'] + llm['completion_tokens']} tokens, estimated cost {llm['estimated_cost']}")
        _warn_partitions(cfg.out)
    else:
        print(f"stages {', '.join(only)} done -> {cfg.out}")
        if "crawl" in only:
            _warn_partitions(cfg.out)
    return 0


def cmd_crawl(a) -> int:
    from bestiary.pipelines.build import build
    if a.config:
        return _run_build(a, ("crawl",))
    from bestiary.connectors import registry
    if not (a.source and a.query and a.out):
        raise ConfigError("crawl needs CONFIG, or --source, --base-url, --query and --out")
    if a.source not in registry.names():
        raise ConfigError(f"unknown source {a.source!r} (known: {', '.join(registry.names())})")
    if registry.get(a.source).needs_base_url and not a.base_url:
        raise ConfigError(f"crawl --source {a.source} needs --base-url")
    try:
        query = registry.get(a.source).parse_query(a.query)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    key_env = a.api_key_env or registry.get(a.source).key_env   # Xeno-canto: XC_API_KEY unless told otherwise
    source = {"name": a.source, "queries": [query], "api_key_env": key_env}
    if a.base_url:
        source["base_url"] = a.base_url
    cfg = parse_config({"out": a.out, "sources": [source]})
    build(cfg, only=("crawl",), force=a.force)
    print(f"catalog -> {cfg.out}/catalog")
    _warn_partitions(cfg.out)
    return 0


def _warn_partitions(out: str) -> None:
    from bestiary.pipelines import io
    path = io.join(out, "work", "stats-crawl.json")
    failed = io.read_json(path).get("partitions_failed") if io.exists(path) else None
    if failed:
        print(f"bestiary: warning: crawl partitions stopped early or ended at a bound: {', '.join(failed)} "
              f"(see {out}/work/rejects-crawl; rerun to resume the ones that failed)", file=sys.stderr)


def cmd_verify(a) -> int:
    from bestiary.pipelines.verify import verify
    report = verify(a.out)
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


# train flags -> dotted TrainConfig keys (a flag left out leaves the YAML's or the default value)
TRAIN_FLAGS = {"shards": "shards", "out": "out", "steps": "steps", "batch_size": "batch_size",
               "accumulate": "accumulate", "lr": "lr", "workers": "workers", "shuffle_buffer": "shuffle_buffer",
               "seed": "seed", "image_size": "image_size", "checkpoint_every": "checkpoint_every",
               "precision": "precision", "log_keys": "log_keys", "taxonomy_loss": "taxonomy_loss",
               "trait_loss": "trait_loss", "stage": "stage", "init": "init", "shard_cache": "shard_cache",
               "embed_dim": "model.embed_dim", "width": "model.width", "audio_encoder": "model.audio_encoder",
               "image_encoder": "model.image_encoder", "text_encoder": "model.text_encoder",
               "audio_weights": "model.audio_weights", "image_weights": "model.image_weights",
               "text_weights": "model.text_weights"}


def train_config(a):
    """The run's config: YAML (--config), then --set, then the flags given."""
    from bestiary.training.config import load_train_config
    overrides = _overrides(a.set)
    for flag, key in TRAIN_FLAGS.items():
        value = getattr(a, flag)
        if value is not None and value is not False:
            overrides[key] = value
    if a.no_augment:
        overrides["augment"] = False
    if a.audio_text_only:
        overrides["pair_weights"] = {"audio_text": 1.0, "audio_image": 0.0, "image_text": 0.0}
    return load_train_config(a.config, overrides)


def cmd_train(a) -> int:
    from bestiary.schemas.manifest import AudioMismatch
    from bestiary.training import distributed as dist
    from bestiary.training.train import train
    cfg = train_config(a)
    if a.seeds and a.seeds > 1:
        return train_seeds(cfg, a.seeds, a.resume)
    info = dist.init_from_env()
    try:
        result = train(cfg, resume=a.resume, progress=progress_on())
    except AudioMismatch as err:
        raise ConfigError(str(err)) from None
    if info["world_size"] > 1:  # leave the group cleanly, then exit before gloo's teardown can hang
        if dist.is_main():
            print(f"trained to step {result['steps']} on {info['world_size']} ranks; checkpoint {result['checkpoint']}",
                  flush=True)
        dist.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    if result["first_loss"] is None:
        print(f"already trained {result['steps']} steps; checkpoint {result['checkpoint']}")
    else:
        print(f"trained to step {result['steps']}, loss {result['first_loss']:.3f} -> {result['last_loss']:.3f}; "
              f"checkpoint {result['checkpoint']}")
    return 0


def train_seeds(cfg, seeds: int, resume: bool) -> int:
    """K runs that differ only in their seed (`{out}/seed-{i}`, seed + i), each evaluated on the shards; the
    figures' mean ± sd over the seeds go to `{out}/seeds.json` and `seeds.md`."""
    import json
    from bestiary.schemas.manifest import AudioMismatch
    from bestiary.training import distributed as dist
    from bestiary.training.evaluate import evaluate, format_seeds, summarize_seeds, write_report
    from bestiary.training.train import train
    if dist.init_from_env()["world_size"] > 1:
        raise ConfigError("--seeds runs its seeds one after another: start it without torchrun")
    if "://" in cfg.out:
        raise ConfigError("--seeds writes its reports beside the runs: give a local --out")
    reports = []
    for i in range(seeds):
        run = cfg.model_copy(update={"seed": cfg.seed + i, "out": os.path.join(cfg.out, f"seed-{i}")})
        try:
            result = train(run, resume=resume, progress=progress_on())
            report = evaluate(result["checkpoint"], cfg.shards)
        except AudioMismatch as err:
            raise ConfigError(str(err)) from None
        write_report(report, os.path.join(run.out, "eval.json"))
        reports.append(report)
        print(f"seed {run.seed}: trained to step {result['steps']}; report {run.out}/eval.json", flush=True)
    summary = summarize_seeds(reports)
    with open(os.path.join(cfg.out, "seeds.json"), "w") as fh:
        json.dump({"seeds": [cfg.seed + i for i in range(seeds)], "figures": summary}, fh, indent=2, sort_keys=True)
    table = format_seeds(summary)
    with open(os.path.join(cfg.out, "seeds.md"), "w") as fh:
        fh.write(table + "\n")
    print(table)
    return 0


def cmd_eval(a) -> int:
    from bestiary.schemas.manifest import AudioMismatch
    from bestiary.training.evaluate import evaluate, format_table, log_report, write_report
    from bestiary.training.train import read_checkpoint
    try:
        report = evaluate(a.checkpoint, a.shards)
    except AudioMismatch as err:
        raise ConfigError(str(err)) from None
    if a.out:
        write_report(report, a.out)
    if "://" not in a.checkpoint:  # the figures go to the run's TensorBoard and eval_log.csv too
        log_report(report, os.path.dirname(os.path.abspath(a.checkpoint)), read_checkpoint(a.checkpoint))
    print(format_table(report))
    return 0


def cmd_export(a) -> int:
    from bestiary.training.inference import export
    path = export(a.checkpoint, a.dir)
    print(f"exported {a.checkpoint} -> {path} (model.safetensors, config.json, tokenizer.json)")
    return 0


def cmd_embed(a) -> int:
    from bestiary.pipelines import progress
    from bestiary.training.inference import embed_files, list_media, write_embeddings
    files = list_media(a.input)
    if not files:
        raise ConfigError(f"no audio or image files under {a.input}")
    rows, errors = embed_files(a.checkpoint, progress.bar(files, len(files), "embed", "file"))
    write_embeddings(rows, a.out)
    print(f"{len(rows)} embeddings -> {a.out}" + (f"; {len(errors)} unreadable: " + ", ".join(
        f"{e['path']} ({e['reason']})" for e in errors[:5]) if errors else ""))
    return 0


def cmd_classify(a) -> int:
    from bestiary.training.inference import Model, list_media
    if a.species:
        species = a.species.split(",")
    elif a.species_file:
        if not os.path.isfile(a.species_file):
            raise ConfigError(f"no such species file: {a.species_file}")
        with open(a.species_file, encoding="utf-8") as fh:
            species = fh.read().splitlines()
    else:
        raise ConfigError("classify needs the species to rank: --species A,B or --species-file FILE")
    species = [s.strip() for s in species if s.strip()]
    if len(species) < 2:
        raise ConfigError("classify needs at least two species (--species A,B or --species-file)")
    if not os.path.exists(a.input):
        raise ConfigError(f"no such file or folder: {a.input}")
    files = list_media(a.input)
    if not files:
        raise ConfigError(f"no audio files under {a.input}")
    model = Model.load(a.checkpoint)
    for name, why in model.unknown_names(species).items():
        print(f"bestiary: warning: {name!r} is {why}; its score means little", file=sys.stderr)
    results, errors = model.classify(files, species, a.text_kind, a.top)
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(results, fh, indent=2)
    for r in results:
        best = "; ".join(f"{x['species']} {x['score']:.3f}" for x in r["ranking"])
        print(f"{r['path']}\t{best}")
    for e in errors:
        print(f"{e['path']}\tunreadable: {e['reason']}", file=sys.stderr)
    return 0


def progress_on() -> bool:
    from bestiary.pipelines import progress
    return progress.ENABLED


def cmd_index(a) -> int:
    from bestiary.search.index import Index, SearchError, audio_files
    if bool(a.shards) == bool(a.input):
        raise SearchError("index wants --shards OUT/shards or --input FOLDER (one of them)")
    index = Index.create(a.out, a.checkpoint, a.window, a.hop)
    if a.input:
        files = audio_files(a.input)
        if not files:
            raise SearchError(f"no audio files under {a.input}")
        r = index.add_files(files, batch=a.batch, progress=progress_on())
        what = f"{r['files']} files embedded, {r['skipped']} unchanged"
    else:
        r = index.add_shards(a.shards, batch=a.batch, progress=progress_on())
        what = f"{r['shards']} shards embedded"
    print(f"{a.out}: {what}, {r['windows']} new windows; {len(index)} windows in all")
    for e in r["errors"]:
        print(f"{e['path']}\tunreadable: {e['reason']}", file=sys.stderr)
    return 0


def cmd_search(a) -> int:
    from bestiary.search.index import Index, SearchError, parse_bbox
    if not a.text and not a.audio:
        raise SearchError("search wants a text, --audio FILE, or both")
    if a.audio and not os.path.isfile(a.audio):
        raise SearchError(f"no such audio file: {a.audio}")
    index = Index.open(a.index)
    hits = index.search(text=a.text, audio=a.audio, top=a.top, species=a.species, since=a.since,
                        bbox=parse_bbox(a.bbox) if a.bbox else None)
    if a.json:
        print(json.dumps(hits, indent=2, default=str))
        return 0
    print(f"{'rank':>4} {'score':>7} {'offset':>8} {'sec':>5}  {'species':<24} where")
    for h in hits:
        where = h["path"] + (f" [{h['sample_key']}]" if h.get("sample_key") else "")
        print(f"{h['rank']:>4} {h['score']:7.3f} {h['offset_s']:8.1f} {h['seconds']:5.1f}  "
              f"{(h['species'] or '-')[:24]:<24} {where}")
    if not hits:
        print("no windows match", file=sys.stderr)
    return 0


def cmd_explore(a) -> int:
    from bestiary.search.explore import serve
    serve(a.out, a.index, a.host, a.port, a.checkpoint)
    return 0


def source_choices() -> list[str]:
    from bestiary.connectors import registry
    return registry.names()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bestiary", description="Tri-modal (sound, image, text) animal datasets from "
                                "public archives, and contrastive models trained on them.")
    p.add_argument("--version", action="version", version=f"bestiary {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log each stage")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve-sample", help="serve the bundled sample archive (Xeno-canto, iNaturalist, "
                       "Macaulay-style and GBIF routes) on 127.0.0.1")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--scale", type=float, default=1.0, help="records per species, relative to the default")
    s.add_argument("--latency-ms", type=float, default=0.0, help="added to every answer")
    s.add_argument("--max-seconds", type=float, help="cap recording lengths (lighter archives for benchmarks)")
    s.add_argument("--audio-format", choices=["mp3", "wav"], help="serve every recording in one format")
    s.add_argument("--species", type=int, metavar="N",
                   help="a benchmark world: N species drawn with their real tree from --taxonomy (about N/10 "
                        "families, N/3 genera); default: the demo's 34")
    s.add_argument("--taxonomy", metavar="CSV", help="eBird/Clements taxonomy CSV to draw from (raw or birdnames')")
    s.add_argument("--world-seed", type=int, default=0, help="which species --species draws")
    s.add_argument("--difficulty", choices=["clean", "field", "hard"], default="clean",
                   help="field: background noise, a second species, distance, individual variation, weak "
                        "image cues; hard: more of each")
    s.add_argument("--write-taxonomy", metavar="DIR", help="write the drawn world's Taxon.tsv and "
                   "ebird_taxonomy.csv (and avonet.csv with --avonet) here, for the build's taxonomy section")
    s.add_argument("--avonet", metavar="CSV", help="an AVONET table: its families are drawn first, and its rows "
                   "for the drawn species go to DIR")
    s.add_argument("--fault", action="append", metavar="ROUTE=FAULT[,FAULT]",
                   help="inject faults on a route, in order ('503*' for every request); e.g. "
                        "xc_recordings=429,drop or xc_download=404*. Faults: 429 429date 500 502 503 404 410 slow "
                        "html_200 drop truncated_json invalid_json wrong_type empty oversized corrupt_mp3 duplicate "
                        "vanish none")
    s.add_argument("--ready-file", help="write the base URL here once listening")
    s.set_defaults(fn=cmd_serve_sample)

    def stage(name: str, helptext: str, only: tuple[str, ...]):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("config", help="build config (YAML)")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (dotted key)")
        sp.add_argument("--force", action="store_true", help="rerun stages even if their outputs are up to date")
        sp.set_defaults(fn=lambda a: _run_build(a, only))
        return sp

    c = sub.add_parser("crawl", help="crawl the configured sources, or one source given by flags")
    c.add_argument("config", nargs="?", help="build config (YAML)")
    c.add_argument("--source", choices=source_choices())
    c.add_argument("--base-url")
    c.add_argument("--query", help="Xeno-canto tags ('grp:birds gen:Parus'); iNaturalist, Macaulay, GBIF "
                   "'key=value&...' or JSON; a bulk source's file")
    c.add_argument("--out")
    c.add_argument("--api-key-env", help="environment variable holding the API key (Xeno-canto: XC_API_KEY, "
                   "the default)")
    c.add_argument("--set", action="append", metavar="KEY=VALUE")
    c.add_argument("--force", action="store_true")
    c.set_defaults(fn=cmd_crawl)
    stage("enrich", "resolve names to accepted species with lineage (backbone dump, GBIF match or iNat taxa) and "
          "join trait tables (needs crawl)", ("enrich",))
    stage("caption", "write template captions (needs enrich)", ("caption",))
    stage("shard", "probe and dedupe media, plan splits, write WebDataset shards + manifest (needs caption)",
          ("shard",))
    b = stage("build", "run every stage from one config: crawl, enrich, caption, shard",
              ("crawl", "enrich", "caption", "shard"))
    b.add_argument("--rebuild", action="store_true",
                   help="every stage again from the kept raw pages and caches, offline: byte-identical output")
    b.add_argument("--incremental", action="store_true",
                   help="add what the archives published or changed since the last run: new shards, tombstones "
                        "for changed or deleted records, manifest-vN.json (needs a finished build in `out`)")

    v = sub.add_parser("verify", help="recheck every shard's sha256 and that every member decodes")
    v.add_argument("out", help="build output folder (holds shards/manifest.json)")
    v.set_defaults(fn=cmd_verify)

    t = sub.add_parser("train", help="train the tri-modal model on the shards (under torchrun for DDP)",
                       description="Defaults live in the training config (training/config.py); a flag overrides "
                                   "--config's YAML and --set.")
    t.add_argument("--config", help="training config (YAML): every field of TrainConfig, model.* included")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (dotted key)")
    t.add_argument("--shards", help="the shards' folder or URL (http(s)://, s3://, gs://) holding manifest.json")
    t.add_argument("--out", help="run folder: checkpoint.pt, log.csv, tb/ (local; or s3:// for checkpoint and log)")
    t.add_argument("--steps", type=int)
    t.add_argument("--batch-size", type=int, help="per rank and micro-batch")
    t.add_argument("--accumulate", type=int, help="micro-batches per optimizer step")
    t.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (resume points)")
    t.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="auto: bf16 autocast on CUDA, fp32 on the CPU")
    t.add_argument("--no-augment", action="store_true", help="no random crops, flips or caption kinds")
    t.add_argument("--shuffle-buffer", type=int, help="samples shuffled in a buffer; 0 for shard order")
    t.add_argument("--log-keys", action="store_true", default=None, help="write the sample keys each rank trained on")
    t.add_argument("--lr", type=float)
    t.add_argument("--workers", type=int, help="data loader workers")
    t.add_argument("--seed", type=int)
    t.add_argument("--seeds", type=int, metavar="K",
                   help="train K runs (seed, seed+1, ...) into OUT/seed-{i}, evaluate each on the shards, and "
                        "write every figure's mean ± sd over the seeds to OUT/seeds.json and seeds.md")
    t.add_argument("--image-size", type=int)
    t.add_argument("--shard-cache", metavar="DIR", help="keep a local copy of each remote shard here")
    t.add_argument("--embed-dim", type=int)
    t.add_argument("--width", type=int)
    t.add_argument("--audio-encoder", choices=["cnn", "clap"],
                   help="cnn: small, from scratch; clap: HTS-AT from --audio-weights (a local transformers folder)")
    t.add_argument("--image-encoder", choices=["cnn", "clip"],
                   help="cnn: small, from scratch; clip: a CLIP/BioCLIP vision tower from --image-weights")
    t.add_argument("--text-encoder", choices=["transformer", "hf"],
                   help="transformer: small, from scratch; hf: CLIP text, RoBERTa or a sentence encoder from "
                        "--text-weights (its tokenizer too)")
    t.add_argument("--audio-weights", metavar="DIR", help="local folder written by save_pretrained; never downloaded")
    t.add_argument("--image-weights", metavar="DIR")
    t.add_argument("--text-weights", metavar="DIR")
    t.add_argument("--audio-text-only", action="store_true", help="train the audio-text pair only")
    t.add_argument("--stage", choices=["joint", "audio"],
                   help="BioVITA: 'audio' trains audio onto a frozen image-text space (stage 1); 'joint' all (stage 2)")
    t.add_argument("--init", help="start from this checkpoint's weights (e.g. stage 2 from stage 1)")
    t.add_argument("--trait-loss", type=float, metavar="W",
                   help="weight of the auxiliary trait heads on the audio embedding (0: none)")
    t.add_argument("--taxonomy-loss", action="store_true", default=None,
                   help="AnimalCLAP's taxonomy-aware objective: same genus or family as soft positives")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    t.set_defaults(fn=cmd_train)

    x = sub.add_parser("export", help="a checkpoint as a folder others can load: model.safetensors, config.json, "
                       "tokenizer.json (bestiary.training.inference.Model.load)")
    x.add_argument("checkpoint", help="checkpoint.pt (a path or URL)")
    x.add_argument("dir", help="the folder to write")
    x.set_defaults(fn=cmd_export)

    m = sub.add_parser("embed", help="embed a folder of audio files or images into Parquet")
    m.add_argument("--checkpoint", required=True)
    m.add_argument("--input", required=True, help="a file or a folder (searched recursively)")
    m.add_argument("--out", required=True, help="Parquet: path, modality, offset_s, embedding")
    m.set_defaults(fn=cmd_embed)

    k = sub.add_parser("classify", help="rank a species list for each audio file, zero-shot")
    k.add_argument("--checkpoint", required=True)
    k.add_argument("--input", required=True, help="an audio file or a folder")
    k.add_argument("--species", help="comma-separated scientific names")
    k.add_argument("--species-file", help="one scientific name per line")
    k.add_argument("--text-kind", default="scientific", choices=["scientific", "taxonomy", "common"],
                   help="which caption type to build the class prompts from")
    k.add_argument("--top", type=int, default=5)
    k.add_argument("--out", help="write the rankings as JSON here")
    k.set_defaults(fn=cmd_classify)

    ix = sub.add_parser("index", help="embed windows of every recording (a folder, or a dataset's shards) into "
                        "a vector index; a rerun embeds only what is new")
    ix.add_argument("--checkpoint", required=True, help="checkpoint.pt or an export folder")
    ix.add_argument("--shards", help="a built dataset's shards (OUT/shards or a URL)")
    ix.add_argument("--input", help="an audio file or a folder of them (searched recursively)")
    ix.add_argument("--out", required=True, help="the index folder (created, or added to)")
    ix.add_argument("--window", type=float, help="window seconds (default: the model's clip length)")
    ix.add_argument("--hop", type=float, help="hop seconds (default: half the window)")
    ix.add_argument("--batch", type=int, default=32, help="windows per forward pass")
    ix.set_defaults(fn=cmd_index)

    q = sub.add_parser("search", help="the windows of an index that best match a text, an audio example, or both")
    q.add_argument("index", help="an index folder (`bestiary index`)")
    q.add_argument("text", nargs="?", help="free text, e.g. \"owl hooting at night\"")
    q.add_argument("--audio", help="an example recording (its most salient clip is the query)")
    q.add_argument("--top", type=int, default=10)
    q.add_argument("--species", nargs="+", help="only windows of these species (scientific or common names)")
    q.add_argument("--since", help="only windows recorded on or after this date (YYYY[-MM[-DD]])")
    q.add_argument("--bbox", help="only windows recorded inside W,S,E,N (degrees)")
    q.add_argument("--json", action="store_true", help="JSON rows instead of a table")
    q.set_defaults(fn=cmd_search)

    ex = sub.add_parser("explore", help="a local web page to browse a built dataset and search its index")
    ex.add_argument("out", help="a build's output folder")
    ex.add_argument("--index", help="an index folder, to search from the page")
    ex.add_argument("--checkpoint", help="the model for text queries (default: the index's own)")
    ex.add_argument("--host", default="127.0.0.1")
    ex.add_argument("--port", type=int, default=8765)
    ex.set_defaults(fn=cmd_explore)

    e = sub.add_parser("eval", help="zero-shot species and retrieval benchmarks, with chance levels")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--shards", required=True)
    e.add_argument("--out", help="write the report as JSON here")
    e.set_defaults(fn=cmd_eval)
    for command in sub.choices.values():   # `bestiary -q build` and `bestiary build ... -q` alike
        command.add_argument("-q", "--quiet", dest="quiet_here", action="store_true", help="no progress on stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for handler in logging.getLogger().handlers:  # Beam warns about Google Cloud clients we never use
        handler.addFilter(lambda rec: not str(rec.msg).startswith("apitools not found"))
    try:
        from bestiary.pipelines import progress
        progress.enable(not (args.quiet or args.quiet_here))
        return args.fn(args)
    except ConfigError as err:
        print(f"bestiary: config error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except FileNotFoundError as err:   # a path the user gave: its name, not Python's errno text
        print(f"bestiary: not found: {err.filename}" if err.filename else f"bestiary: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except SearchError as err:
        print(f"bestiary: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except LeakError as err:
        print(f"bestiary: build failed the leak check, nothing published: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
