"""The archives' own taxonomies: eBird/Clements codes (Macaulay) and iNaturalist taxon ids.

They turn what an archive gave (a species code, a taxon id, an English name)
into a scientific name for the backbone, so all three archives meet on one
accepted taxon.  The eBird table is small (~17k rows) and read whole; the
iNaturalist table (~1.5M rows) is streamed against the ids a catalog holds.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from bestiary.pipelines import io as fio
from bestiary.taxonomy import tables
from bestiary.taxonomy.names import ParsedName, parse_name

ROLL_UP = {"issf", "form", "intergrade", "domestic"}   # report as their species when REPORT_AS says which


@dataclass(frozen=True)
class EbirdTaxon:
    code: str
    category: str
    sci_name: str
    common_name: str
    report_as: str | None


def read_ebird(path: str) -> dict[str, EbirdTaxon]:
    """eBird/Clements CSV, current (SCI_NAME, PRIMARY_COM_NAME) or older (SCIENTIFIC_NAME, COMMON_NAME)
    columns, or birdnames' processed list (species only); BOM or not, CRLF or not."""
    text = fio.read_bytes(path).decode("utf-8-sig")
    out = {}
    for row in csv.DictReader(io.StringIO(text, newline="")):
        code = row.get("SPECIES_CODE") or row.get("ebird_ebird_code")
        sci = row.get("SCI_NAME") or row.get("SCIENTIFIC_NAME") or row.get("scientific_name")
        if not code or not sci:
            continue
        out[code.strip()] = EbirdTaxon(
            code.strip(), (row.get("CATEGORY") or "species").strip().lower(), sci.strip(),
            (row.get("PRIMARY_COM_NAME") or row.get("COMMON_NAME") or row.get("ebird_common_name") or "").strip(),
            (row.get("REPORT_AS") or "").strip() or None)
    return out


def ebird_species(code: str, table: dict[str, EbirdTaxon]) -> tuple[EbirdTaxon | None, str | None]:
    """The species an eBird code stands for, or (None, its category) for spuhs, slashes and hybrids."""
    t = table.get(code)
    if t is None:
        return None, "unknown_code"
    if t.category == "species":
        return t, None
    if t.category in ROLL_UP and t.report_as and table.get(t.report_as, t).category == "species":
        return table[t.report_as], None
    return None, t.category


def common_name_index(table: dict[str, EbirdTaxon]) -> dict[str, str]:
    """English name (lower case) -> species code, species rows only."""
    return {t.common_name.lower(): t.code for t in table.values() if t.category == "species" and t.common_name}


def inat_layout(path: str) -> tuple[str, str]:
    """(delimiter, id column) of an iNaturalist taxa table: the open-data `taxa.csv` (TAB,
    taxon_id/ancestry/rank/name/active) or the DwC-A `taxa.csv` (comma, id/scientificName/taxonRank)."""
    delim = "\t" if "taxon_id" in tables.header(path, "\t") else ","
    return delim, "taxon_id" if "taxon_id" in tables.header(path, delim) else "id"


def inat_taxon(row: dict) -> dict:
    """One taxa-table row -> what a lookup needs of it."""
    return {"name": row.get("name") or row.get("scientificName"),
            "rank": (row.get("rank") or row.get("taxonRank") or "").lower(),
            "active": (row.get("active") or "true").lower() != "false"}


def read_inat_taxa(path: str, ids: set[str]) -> dict[str, dict]:
    """iNaturalist taxa by id, the whole table streamed in this process (the build joins by id over ranges)."""
    delim, id_col = inat_layout(path)
    value_set = pa.array(sorted(ids), pa.string())
    return {r[id_col]: inat_taxon(r)
            for t in tables.scan(path, lambda t: pc.is_in(t[id_col], value_set=value_set), delimiter=delim)
            for r in t.to_pylist()}


@dataclass(frozen=True)
class Lookup:
    """What to look up in the backbone for one catalog row, and how it was found."""
    name: ParsedName
    via: str            # name | ebird_code | inat_id | common_name


def lookup_for(row: dict, ebird: dict[str, EbirdTaxon] | None, inat: dict[str, dict] | None,
               commons: dict[str, str] | None) -> Lookup:
    code = row.get("source_taxon_id")   # the catalog's own field: an eBird code or an iNaturalist taxon id
    if ebird and row.get("source") == "macaulay" and code and code in ebird:
        sp, why = ebird_species(code, ebird)
        return Lookup(parse_name(sp.sci_name) if sp else ParsedName(why), "ebird_code")
    if inat and row.get("source") == "inaturalist" and code and code in inat and inat[code]["name"]:
        return Lookup(parse_name(inat[code]["name"]), "inat_id")
    parsed = parse_name(row.get("scientific_name"))
    if parsed.kind == "empty" and ebird and commons and (row.get("common_name") or "").lower() in commons:
        sp, _ = ebird_species(commons[row["common_name"].lower()], ebird)
        return Lookup(parse_name(sp.sci_name), "common_name")
    return Lookup(parsed, "name")
