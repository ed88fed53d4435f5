"""One interface for every source: how it pages, how its records become catalog rows, how it grows.

A connector is stateless: the crawl stage hands it an HTTP client, the source's
config, a query and a cursor, and gets pages back.  Everything that varies by
archive (paging, normalising, id ranges, incremental partitions, the short code
in sample keys, which copy wins a duplicate) lives on the connector, so the
stages never branch on a source's name.  `registry.py` maps names to connectors.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, ClassVar

from bestiary.connectors.http import HttpClient


class PagingChanged(RuntimeError):
    """The result set changed under page-number paging: pages may have shifted, start again."""


class Connector:
    """The base: subclasses set the class attributes and implement `pages` and `normalize`."""

    name: ClassVar[str]                 # the config's `name`
    code: ClassVar[str]                 # short code in sample keys ("xc")
    priority: ClassVar[int] = 9         # dedupe: the lowest wins (originals before mirrors)
    cursor_field: ClassVar[str | None] = None   # catalog column whose highest value is an id cursor
    id_ranges: ClassVar[bool] = False   # can a query be cut into record-id ranges?
    bulk: ClassVar[bool] = False        # a file read whole (queries are paths or URLs), not an API
    needs_key: ClassVar[bool] = False   # the API refuses requests without a key
    key_env: ClassVar[str | None] = None   # the usual environment variable for it
    api_path: ClassVar[str | None] = None  # what preflight asks: a 404 there means the base URL is wrong
    needs_base_url: ClassVar[bool] = True  # False: everything it reads is named in its queries (files)
    # its media may be paths (local, s3://, gs://) the build reads; never for an archive, whose records
    # must not make a build read the machine's own files
    local_media: ClassVar[bool] = False

    def pages(self, client: HttpClient, src, query: Any, cursor: Any) -> Iterator[tuple[list[dict], Any, int | None]]:
        """(records, next cursor, records the API says the query has (None: it does not say)) per page; the
        cursor is None after the last page.  The crawl bounds the pages by that count, and stops on a cursor
        seen before or a page that repeats the last one."""
        raise NotImplementedError

    def normalize(self, src, record: dict) -> list[dict]:
        """Catalog rows (audio and images) from one raw record."""
        raise NotImplementedError

    def with_id_range(self, query: Any, lo: int, hi: int) -> Any:
        raise ValueError(f"{self.name} has no id-range partitions")

    def delta_queries(self, query: Any, cursor: int | None, watermark: str) -> list[tuple[str, str, Any]]:
        """An incremental run's (suffix, mode, query): by default the query is listed again ('relist')."""
        return [("relist", "relist", query)]

    def parse_query(self, text: str) -> Any:
        """A `crawl --query` string: 'key=value&...' or JSON, for the sources whose queries are mappings."""
        text = text.strip()
        if text.startswith("{"):
            try:
                out = json.loads(text)
            except ValueError as err:
                raise ValueError(f"--query is not valid JSON ({err.msg})") from None
            if not isinstance(out, dict):
                raise ValueError("--query JSON must be an object")
            return out
        pairs = [kv for kv in text.split("&") if kv]
        if not pairs or any("=" not in kv for kv in pairs):
            raise ValueError(f"--query for {self.name} is 'key=value&key=value' or JSON, got {text!r}")
        return dict(kv.split("=", 1) for kv in pairs)

    @staticmethod
    def record_id(record: Any) -> str:
        """The id a reject names when a record cannot be read."""
        return str(record.get("id", "?")) if isinstance(record, dict) else "?"
