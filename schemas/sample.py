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
    "audio": {"offset_s": "float", "seconds": "float", "sample_rate": "int", "original_sample_rate": "int",
              "original_channels": "int", "original_seconds": "float", "rms_dbfs": "float",
              "ultrasonic_content_lost": "bool", "pcm_sha256": "str"},
    "image": {"key": "str", "pairing": "str", "license": "str", "license_url": "str", "attribution": "str",
              "original_size": ["int"]},
    "captions": [{"kind": "str", "text": "str", "source": "str", "reason": "str"}],
    "location": {"lat": "float", "lon": "float", "country": "str"},
    "recorded_on": "str", "sound_type": "str", "quality": "str", "background_species": ["str"],
}


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
