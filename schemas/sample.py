"""The shard sample: its members and the structure of `key.json`, and the Hugging Face
`datasets` features that load shards as they are (audio kept as bytes: no torchcodec)."""
from __future__ import annotations

from bestiary.taxonomy.traits import CATEGORIES, TRAITS

MEMBERS = ("flac", "jpg", "json", "txt")
RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")

# key.json, field by field ("str", "float", "int", "bool", nested dicts, [item] for lists)
SAMPLE_JSON = {
    "key": "str", "source": "str", "source_id": "str", "record_key": "str", "observation_id": "str", "split": "str",
    "taxon": {"taxon_id": "str", "accepted_name": "str", "common_name": "str", "name_as_given": "str",
              "resolution": "str", "lineage": {r: "str" for r in RANKS}, "lineage_ids": {r: "str" for r in RANKS}},
    "traits": {t: "str" if t in CATEGORIES else "bool" for t in TRAITS},   # null where no table says
    "license": "str", "license_url": "str", "attribution": "str", "recordist": "str",
    "audio": {"license": "str", "license_url": "str", "offset_s": "float", "seconds": "float", "sample_rate": "int", "original_sample_rate": "int",
              "original_channels": "int", "original_seconds": "float", "rms_dbfs": "float",
              "ultrasonic_share": "float", "time_expansion": "int", "ultrasonic_content_lost": "bool",
              "pcm_sha256": "str"},
    "image": {"key": "str", "pairing": "str", "license": "str", "license_url": "str", "attribution": "str",
              "original_size": ["int"]},
    "captions": [{"kind": "str", "text": "str", "source": "str", "reason": "str"}],
    "location": {"lat": "float", "lon": "float", "country": "str"},
    "recorded_on": "str", "sound_type": "str", "quality": "str", "background_species": ["str"],
}


_YAML_DTYPES = {"str": "string", "float": "float64", "int": "int64", "bool": "bool"}


def hf_yaml_features() -> list[dict]:
    """The same features as `hf_features()` in the dataset card's YAML form (`dataset_info.features`), so
    `load_dataset(OUT)` reads audio as bytes with no argument; built without importing `datasets`."""
    def field(name: str, spec) -> dict:
        if isinstance(spec, dict):
            return {"name": name, "struct": [field(k, v) for k, v in spec.items()]}
        if isinstance(spec, list):
            inner = spec[0]
            if isinstance(inner, dict):
                return {"name": name, "list": [field(k, v) for k, v in inner.items()]}
            return {"name": name, "list": _YAML_DTYPES[inner]}
        return {"name": name, "dtype": _YAML_DTYPES[spec]}

    return [{"name": "flac", "dtype": "binary"}, {"name": "jpg", "dtype": "image"}, field("json", SAMPLE_JSON),
            {"name": "txt", "dtype": "string"}, {"name": "__key__", "dtype": "string"},
            {"name": "__url__", "dtype": "string"}]


def hf_features():
    """`datasets.Features` for `load_dataset("webdataset", data_files=..., features=hf_features())`."""
    import datasets

    scalar = {"str": datasets.Value("string"), "float": datasets.Value("float64"), "int": datasets.Value("int64"),
              "bool": datasets.Value("bool")}

    def conv(spec):
        if isinstance(spec, dict):
            return {k: conv(v) for k, v in spec.items()}
        if isinstance(spec, list):
            return datasets.List(conv(spec[0])) if hasattr(datasets, "List") else [conv(spec[0])]
        return scalar[spec]

    return datasets.Features({"flac": datasets.Value("binary"), "jpg": datasets.Image(), "json": conv(SAMPLE_JSON),
                              "txt": datasets.Value("string"), "__key__": datasets.Value("string"),
                              "__url__": datasets.Value("string")})
