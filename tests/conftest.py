"""Shared fixtures: the sample archive server (once per session), the real fixtures, a tiny build."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared" / "fixtures"
TEST_KEY = "test-key-not-a-secret-0123456789"


def bomb_png(width: int = 50000, height: int = 50000) -> bytes:
    """A PNG that declares width x height pixels (a decompression bomb's header) in a few bytes:
    the image paths must refuse it from the header, before decoding anything."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    idat = zlib.compress(row * 16)  # the first rows only: enough to look real
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def fixture_path(*parts: str) -> Path:
    p = FIXTURES.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real fixture {p} not available")
    return p


@pytest.fixture(scope="session", autouse=True)
def xc_key():
    """The sample archive wants a Xeno-canto key like the real one; tests grep outputs for this value."""
    old = os.environ.get("XC_API_KEY")
    os.environ["XC_API_KEY"] = TEST_KEY
    yield TEST_KEY
    if old is None:
        os.environ.pop("XC_API_KEY", None)
    else:
        os.environ["XC_API_KEY"] = old


@pytest.fixture(scope="session")
def archive_server():
    """The sample archive on a free port of 127.0.0.1, serving for the whole session."""
    from bestiary.sample_archive.server import start_in_thread
    server, state, url = start_in_thread(seed=7)
    yield state, url
    server.shutdown()
    server.server_close()


def sample_taxonomy() -> dict:
    """The sample archive's backbone slice, eBird taxonomy and trait tables."""
    from bestiary.sample_archive.taxonomy_data import DATA
    return {"backbone": str(DATA / "Taxon.tsv"), "ebird": str(DATA / "ebird_taxonomy.csv"),
            "traits": [{"path": str(DATA / "avonet.csv"), "mapping": "avonet"},
                       {"path": str(DATA / "eltontraits_birds.txt"), "mapping": "eltontraits_birds"},
                       {"path": str(DATA / "amphibio.csv"), "mapping": "amphibio"}]}


def tiny_config(url: str, out: str, **extra) -> dict:
    """The owls (Strigidae) from all three archives and GBIF: 5 species, two of them unseen."""
    from bestiary.sample_archive.species import GBIF_KEYS
    owls = "tawowl1,brdowl,eueowl1,grhowl,litowl1"
    cfg = {
        "out": out,
        "sources": [
            {"name": "xeno-canto", "base_url": url, "api_key_env": "XC_API_KEY",
             "queries": ["gen:Strix", "gen:Bubo", "gen:Athene"], "per_page": 50},
            {"name": "inaturalist", "base_url": url, "per_page": 5,
             "queries": [{"sounds": "true", "taxon_id": 920003}, {"photos": "true", "taxon_id": 920003}]},
            {"name": "macaulay", "base_url": url, "license_override": "CC-BY-NC-4.0", "per_page": 4,
             "queries": [{"taxonCode": owls, "mediaType": "audio"}, {"taxonCode": owls, "mediaType": "photo"}]},
            {"name": "gbif", "base_url": url, "per_page": 3,
             "queries": [{"mediaType": "Sound", "taxonKey": GBIF_KEYS["Strigidae"]}]},
        ],
        "taxonomy": sample_taxonomy(),
        "media": {"max_clips_per_recording": 2, "image_size": 96},
        "shards": {"samples_per_shard": 16, "min_shards_per_split": 2},
    }
    cfg.update(extra)
    return cfg


@pytest.fixture(scope="session")
def tiny_build(archive_server, tmp_path_factory):
    """One real build of the tiny config (crawl, enrich, caption, shard) shared by tests that read it."""
    from bestiary.pipelines.build import build
    from bestiary.schemas.config import parse_config
    _, url = archive_server
    out = str(tmp_path_factory.mktemp("tiny") / "out")
    cfg = parse_config(tiny_config(url, out))
    stats = build(cfg)
    return cfg, stats


@pytest.fixture(scope="session")
def search_model(tiny_build, tmp_path_factory):
    """A small model trained on the tiny build (3 seen owl species), as a user's checkpoint."""
    from bestiary.training.config import ModelConfig
    from bestiary.training.train import TrainConfig, train
    cfg, _ = tiny_build
    out = str(tmp_path_factory.mktemp("search-run"))
    r = train(TrainConfig(shards=os.path.join(cfg.out, "shards"), out=out, steps=120, batch_size=8, workers=1,
                          seed=0, model=ModelConfig(embed_dim=32, width=16)), progress=False)
    return r["checkpoint"]


@pytest.fixture(scope="session")
def moto_s3():
    """A local S3 (moto's server) with a bucket; credentials and the endpoint through the environment, the
    way workers and training ranks inherit them."""
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    endpoint = "http://127.0.0.1:%d" % server._server.server_address[1]
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL_S3=endpoint)
    import boto3
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


BUCKET = "bestiary-test"


def static_server(folder: str):
    """A plain static file server on 127.0.0.1 over `folder` (shards served over HTTP); (server, base URL)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        disable_nagle_algorithm = True
        requests_seen: list = []

        def log_message(self, *args) -> None:
            Quiet.requests_seen.append(self.path)

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=folder))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.requests_seen = Quiet.requests_seen
    return server, f"http://127.0.0.1:{server.server_address[1]}"
