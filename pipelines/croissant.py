"""`OUT/croissant.json`: Croissant (MLCommons) metadata for a build, written with mlcroissant: the shards and
the catalog tables as file sets, and every catalog table (and the attribution table) as a record set whose
fields are the table's scalar columns, typed from its Parquet schema."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from bestiary.connectors.licenses import license_url
from bestiary.pipelines import io
from bestiary.schemas.config import BuildConfig

TABLES = ("recordings", "images", "taxa", "resolutions", "traits", "captions", "probes")
PARQUET = "application/x-parquet"


def _data_type(t: pa.DataType):
    import mlcroissant as mlc
    if pa.types.is_boolean(t):
        return mlc.DataType.BOOL
    if pa.types.is_integer(t):
        return mlc.DataType.INTEGER
    if pa.types.is_floating(t):
        return mlc.DataType.FLOAT
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return mlc.DataType.TEXT
    if pa.types.is_date(t):
        return mlc.DataType.DATE
    return None   # nested columns: described in the README's column list, not as Croissant fields


def _table_schema(folder: str) -> pa.Schema | None:
    parts = io.parts(folder)
    if not parts:
        return None
    return pq.read_schema(pa.BufferReader(io.read_bytes(parts[0])))   # one part (at most PART_BYTES)


def croissant_metadata(cfg: BuildConfig, manifest: dict, published: list[str]) -> dict:
    import mlcroissant as mlc
    from bestiary import __version__
    distribution = [mlc.FileSet(id="shards", name="shards", encoding_formats=["application/x-tar"],
                                includes="shards/*.tar",
                                description="WebDataset shards: per sample {key}.flac, .jpg, .json, .txt")]
    record_sets = []
    tables = [(t, io.join(cfg.out, "catalog", t), f"catalog/{t}/*.parquet") for t in TABLES]
    tables.append(("attribution", io.join(cfg.out, "attribution"), "attribution/*.parquet"))
    for name, folder, pattern in tables:
        schema = _table_schema(folder)
        if schema is None:
            continue
        files = f"{name}-files"
        distribution.append(mlc.FileSet(id=files, name=files, encoding_formats=[PARQUET], includes=pattern))
        fields = []
        for col in schema:
            kind = _data_type(col.type)
            if kind is None:
                continue
            fields.append(mlc.Field(id=f"{name}/{col.name}", name=col.name, data_types=[kind],
                                    source=mlc.Source(file_set=files, extract=mlc.Extract(column=col.name))))
        record_sets.append(mlc.RecordSet(id=name, name=name, fields=fields,
                                         description=f"the {name} table (one Parquet part folder)"))
    splits = manifest["splits"]
    meta = mlc.Metadata(
        name=f"bestiary-{manifest['config_fingerprint'][:12]}",
        description=("A tri-modal (sound, image, text) animal dataset built by bestiary: "
                     + ", ".join(f"{v['samples']} {k} samples" for k, v in sorted(splits.items()))
                     + f"; {manifest['clip_seconds']:g} s mono FLAC clips at {manifest['sample_rate']} Hz."),
        license=[u for u in (license_url(p) for p in published) if u] or None,
        url="https://github.com/bestiary/bestiary", version="1.0.0",
        cite_as=f"bestiary {__version__}, config fingerprint {manifest['config_fingerprint']}",
        distribution=distribution, record_sets=record_sets)
    return meta.to_json()


def write_croissant(cfg: BuildConfig, manifest: dict, published: list[str]) -> dict:
    import json
    doc = croissant_metadata(cfg, manifest, published)
    io.write_bytes(io.join(cfg.out, "croissant.json"), json.dumps(doc, indent=2, sort_keys=True, default=str).encode())
    return doc
