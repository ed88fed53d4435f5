"""The build configuration: one typed, frozen object loaded from YAML.

`${VAR}` and `${VAR:-default}` in YAML strings are expanded from the
environment at load time, so base URLs can vary per machine.  Secrets are
never read into the config: a source names the *environment variable* that
holds its key (`api_key_env`), and the key is read when a request is made.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator



def source_names() -> list[str]:
    """The sources the connector registry knows (imported lazily: connectors build on schemas)."""
    from bestiary.connectors import registry
    return registry.names()


class ConfigError(ValueError):
    """A configuration problem, reported as one line before any work starts."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IdRanges(_Frozen):
    """Split each query into `parts` record-id ranges over [start, stop]: independent partitions."""
    start: int = Field(ge=0)
    stop: int = Field(ge=0)
    parts: int = Field(ge=1)


class SourceConfig(_Frozen):
    """An archive's API; or a bulk file source, whose `queries` are files (paths or URLs) and
    whose `base_url` is where its media live (iNaturalist open data: the photo bucket;
    Macaulay export: the asset CDN)."""
    name: str                              # a connector in connectors/registry.py
    base_url: str | None = None            # every source but `files` (whose tables name their media)
    media_base_url: str | None = None      # Macaulay's asset CDN, when not base_url
    queries: list[Any] = Field(min_length=1)
    per_page: int = Field(100, ge=1, le=500)
    max_pages: int | None = Field(None, ge=1)
    api_key_env: str | None = None         # e.g. XC_API_KEY; the value never enters the config
    license_override: str | None = None    # only with written permission from the archive
    requests_per_second: float | None = Field(None, gt=0)
    id_ranges: IdRanges | None = None      # Xeno-canto (nr:) and iNaturalist (id_above/id_below) only

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in source_names():
            raise ValueError(f"unknown source {v!r} (known: {', '.join(source_names())})")
        return v

    @model_validator(mode="after")
    def _key_where_needed(self):
        from bestiary.connectors import registry
        if registry.get(self.name).needs_base_url and not self.base_url:
            raise ValueError(f"{self.name} needs base_url (the archive's host, e.g. https://xeno-canto.org)")
        if registry.get(self.name).needs_key and not self.api_key_env:
            raise ValueError(f"{self.name} needs an API key: set api_key_env to the environment variable "
                             f"that holds it (e.g. {registry.get(self.name).key_env})")
        return self

    @field_validator("base_url", "media_base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"not an http(s) URL: {v!r}")
        return v.rstrip("/") if v else v


class HttpConfig(_Frozen):
    """The HTTP policy every connector shares (per-source rates are on each source)."""
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(30.0, gt=0)
    retries: int = Field(5, ge=0)
    body_retries: int = Field(3, ge=0)
    backoff: float = Field(0.5, ge=0)
    max_body_mb: float = Field(512, gt=0)
    offline: bool = False          # set by `build --rebuild`: nothing is fetched, caches only
    download_deadline_s: float = Field(1800, gt=0)  # a whole body, however it trickles in
    min_download_bps: float = Field(1024, ge=0)     # after slow_grace_s, a slower body is abandoned
    slow_grace_s: float = Field(30, ge=0)
    max_redirects: int = Field(5, ge=0)
    host_slots: int = Field(8, ge=1)    # groups a host without a rate limit is spread over (across workers)
    host_threads: int = Field(4, ge=1)  # requests in flight at once within one host group


class TraitTableConfig(_Frozen):
    path: str                              # the table (CSV/TSV), any Beam FileSystems path
    mapping: str                           # a built-in mapping (avonet, eltontraits_birds, ...) or a YAML path


class TaxonomyConfig(_Frozen):
    """Where names are resolved: a GBIF backbone dump (streamed), else GBIF's species match API, else the
    archives' own taxa.  eBird and iNaturalist tables turn codes and ids into names first."""
    backbone: str | None = None            # GBIF backbone Taxon.tsv
    gbif_base_url: str | None = None       # species/match, when no backbone dump is given
    ebird: str | None = None               # eBird/Clements taxonomy CSV (Macaulay species codes)
    inat_taxa: str | None = None           # iNaturalist taxa.csv (open data or DwC-A)
    kingdoms: list[str] = ["Animalia"]     # the kingdom guard: homonyms elsewhere never match
    fuzzy_threshold: float = Field(90.0, ge=50, le=100)
    backbone_parts: int = Field(8, ge=1)   # byte ranges per pass over the backbone or iNaturalist's taxa (work units)
    traits: list[TraitTableConfig] = []    # earlier tables win a conflict


class MediaConfig(_Frozen):
    sample_rate: int = 48000
    clip_seconds: float = Field(10.0, gt=0)
    max_clips_per_recording: int = Field(3, ge=1)
    min_seconds: float = Field(1.0, ge=0)
    min_source_rate: int = Field(8000, ge=1)
    image_size: int = Field(256, ge=16)
    # recordings whose energy is mostly above sample_rate / 2 (bats, rodents, insects): reject | time_expand | keep
    ultrasonic: Literal["reject", "time_expand", "keep"] = "reject"
    ultrasonic_share: float = Field(0.5, gt=0, le=1)   # the share of energy above Nyquist that counts
    time_expansion: int = Field(10, ge=2)              # with ultrasonic: time_expand (x10: 20-200 kHz -> 2-20 kHz)

    def ultrasonic_policy(self):
        from bestiary.media.audio import Ultrasonic
        return Ultrasonic(self.ultrasonic, self.ultrasonic_share, self.time_expansion)


class LicenseConfig(_Frozen):
    allow: list[str] = ["CC0-1.0", "CC-BY-*", "CC-BY-SA-*", "CC-BY-NC-*", "CC-BY-NC-SA-*"]
    # ND (No Derivatives) works are kept in the catalog but not put in samples: clips are cut, resampled and
    # re-encoded, which ND does not allow to share.  True only with the rights holders' permission.
    allow_no_derivatives: bool = False


class SplitConfig(_Frozen):
    unseen_fraction: float = Field(0.2, ge=0, lt=1)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.15, ge=0, lt=1)
    salt: str = "bestiary-v1"


class ShardConfig(_Frozen):
    samples_per_shard: int = Field(1000, ge=1)
    # a recording with no image of its species in its split: an audio-text sample (False) or a reject (True)
    require_image: bool = False
    max_mb: float | None = Field(None, gt=0)   # also cap a shard's estimated size
    min_shards_per_split: int = Field(1, ge=1)


class LLMConfig(_Frozen):
    """Any OpenAI-compatible chat-completions server: OpenAI, vLLM, llama.cpp, Ollama."""
    base_url: str
    model: str
    api_key_env: str | None = None         # e.g. OPENAI_API_KEY; local servers need none
    prompt_file: str | None = None         # default: the packaged captioning/prompts/caption-v1.yaml
    requests_per_second: float = Field(2.0, gt=0)
    concurrency: int = Field(4, ge=1)
    timeout_s: float = Field(30.0, gt=0)
    max_retries: int = Field(3, ge=0)
    max_requests: int | None = Field(None, ge=0)   # budget for one run; then templates
    max_tokens: int | None = Field(None, ge=0)
    max_output_tokens: int = Field(120, ge=8)
    temperature: float = 0.0
    price_per_1k_input: float = 0.0        # for the cost estimate printed at the end
    price_per_1k_output: float = 0.0

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"not an http(s) URL: {v!r}")
        return v.rstrip("/")


class CaptionConfig(_Frozen):
    default: Literal["common", "scientific", "taxonomy", "scientific_common", "taxonomy_common", "llm"] = "taxonomy_common"
    llm: LLMConfig | None = None


class RunnerConfig(_Frozen):
    """in_memory / multi_processing / multi_threading: Beam's FnApiRunner here; portable: the runner named in
    `options` (--runner=DataflowRunner, FlinkRunner, SparkRunner) with the rest of its options."""
    mode: Literal["in_memory", "multi_processing", "multi_threading", "portable"] = "in_memory"
    workers: int = Field(1, ge=1)
    options: list[str] = []   # more Beam pipeline options, e.g. --s3_endpoint_url=...; never secrets
    job_process: bool = False  # run each pipeline from its serialized graph in a separate process
    # multi_processing: workers forked from one process that has imported Beam and bestiary once (the same
    # SDK harness, without ~2 CPU-s of start-up per worker and pipeline); false: a fresh interpreter each
    warm_workers: bool = True

    @model_validator(mode="after")
    def _portable_names_its_runner(self):
        if self.mode == "portable" and not any(o.startswith("--runner") for o in self.options):
            raise ValueError("runner.mode portable needs --runner=DataflowRunner|FlinkRunner|SparkRunner "
                             "in runner.options")
        return self


class BuildConfig(_Frozen):
    out: str = Field(min_length=1)
    sources: list[SourceConfig] = Field(min_length=1)
    http: HttpConfig = HttpConfig()
    taxonomy: TaxonomyConfig = TaxonomyConfig()
    media: MediaConfig = MediaConfig()
    licenses: LicenseConfig = LicenseConfig()
    splits: SplitConfig = SplitConfig()
    shards: ShardConfig = ShardConfig()
    captions: CaptionConfig = CaptionConfig()
    runner: RunnerConfig = RunnerConfig()
    seed: int = 0

    def fingerprint(self, *sections: str) -> str:
        """A short hash of the named sections (all that shape the output when none): stage outputs record it.

        Where the output goes (`out`), how it is run (`runner`) and fetched (`http`) do not change it."""
        data = self.model_dump(mode="json")
        data = {s: data[s] for s in sections} if sections else {
            k: v for k, v in data.items() if k not in ("out", "runner", "http")}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any) -> Any:
    """Expand ${VAR} / ${VAR:-default} in every string of a YAML tree."""
    if isinstance(value, str):
        def sub(m: re.Match) -> str:
            got = os.environ.get(m.group(1))
            if got is None:
                if m.group(2) is None:
                    raise ConfigError(f"environment variable {m.group(1)} is not set")
                return m.group(2)
            return got
        return _ENV.sub(sub, value)
    if isinstance(value, list):
        return [expand_env(v) for v in value]
    if isinstance(value, dict):
        return {k: expand_env(v) for k, v in value.items()}
    return value


def describe(err: ValidationError, missing_hint: str = "") -> str:
    """A pydantic error as the one line the CLI prints (the build's and the training's configs alike)."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    if first["type"] == "missing":
        return f"missing required field '{where}'{missing_hint}"
    if first["type"] == "value_error" and first["loc"][-1] == "name" and "unknown source" in first["msg"]:
        return first["msg"].removeprefix("Value error, ").replace(" (known", f" at '{where}' (known", 1)
    if first["type"] == "extra_forbidden":
        return f"unknown field '{where}'"
    return f"'{where}': {first['msg'].removeprefix('Value error, ')}"


def parse_config(data: Any, base_dir: Path | None = None) -> BuildConfig:
    if not isinstance(data, dict):
        raise ConfigError("config must be a YAML mapping")
    data = expand_env(data)
    try:
        cfg = BuildConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe(err)) from None
    if base_dir is not None and not Path(cfg.out).is_absolute() and "://" not in cfg.out:
        cfg = cfg.model_copy(update={"out": str((base_dir / cfg.out).resolve())})
    return cfg


MAX_CONFIG_BYTES = 1 << 20     # a build config is a page of YAML; anything near a megabyte is not one
MAX_CONFIG_NODES = 100_000     # values after aliases are expanded: a 'billion laughs' stops here


def _count_nodes(value: Any, budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise ConfigError(f"config expands to more than {MAX_CONFIG_NODES} values (YAML aliases?)")
    if isinstance(value, dict):
        for k, v in value.items():
            _count_nodes(k, budget)
            _count_nodes(v, budget)
    elif isinstance(value, list):
        for v in value:
            _count_nodes(v, budget)


def read_yaml(p: Path) -> Any:
    """A config file's YAML, refusing what is not a small text file, and bounding what aliases expand to."""
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    if p.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{p}: {p.stat().st_size} bytes is not a build config (limit {MAX_CONFIG_BYTES})")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a text file (not UTF-8)") from None
    if "\x00" in text:
        raise ConfigError(f"{p}: not a text file (NUL bytes)")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML ({err.__class__.__name__})") from None
    except RecursionError:
        raise ConfigError(f"{p}: YAML nested too deeply") from None
    _count_nodes(data, [MAX_CONFIG_NODES])
    return data


def apply_override(data: Any, dotted: str, value: Any) -> None:
    """`--set a.b.c=v`: mappings by key, lists by index (`sources.0.base_url`); a clear error otherwise."""
    if not isinstance(data, dict):
        raise ConfigError(f"--set {dotted}: the config is not a YAML mapping")
    *parents, leaf = dotted.split(".")
    node, where = data, []
    for part in parents + [leaf]:
        if not part:
            raise ConfigError(f"--set {dotted}: empty key")
    for part in parents:
        where.append(part)
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {dotted}: '{'.'.join(where)}' is not an index of a list of {len(node)}")
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            raise ConfigError(f"--set {dotted}: '{'.'.join(where[:-1])}' is a value, not a mapping")
    if isinstance(node, list):
        if not leaf.isdigit() or int(leaf) >= len(node):
            raise ConfigError(f"--set {dotted}: '{leaf}' is not an index of a list of {len(node)}")
        node[int(leaf)] = value
    elif isinstance(node, dict):
        node[leaf] = value
    else:
        raise ConfigError(f"--set {dotted}: '{'.'.join(where)}' is a value, not a mapping")


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> BuildConfig:
    """Load and validate a YAML config; `overrides` are dotted keys (`out`, `shards.samples_per_shard`,
    `sources.0.base_url`)."""
    p = Path(path)
    data = read_yaml(p)
    for dotted, value in (overrides or {}).items():
        apply_override(data, dotted, value)
    return with_tables_beside(parse_config(data, base_dir=Path.cwd()), p.resolve().parent)


def with_tables_beside(cfg: BuildConfig, config_dir: Path) -> BuildConfig:
    """The tables of a source whose queries name everything it reads (no base_url: `files`), when given as
    relative paths, are where the config file is."""
    from bestiary.connectors import registry
    sources = []
    for s in cfg.sources:
        if not registry.get(s.name).needs_base_url:
            qs = [q if "://" in str(q) or Path(str(q)).is_absolute() else str(config_dir / str(q)) for q in s.queries]
            s = s.model_copy(update={"queries": qs})
        sources.append(s)
    return cfg.model_copy(update={"sources": sources})
