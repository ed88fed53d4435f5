"""The one HTTP policy every connector shares.

A requests session with retries (429, 5xx, resets; Retry-After honoured),
connect/read timeouts, a User-Agent naming bestiary, a per-host pacer (every
attempt, retries included, takes a tick), a maximum body size and
content-type checks.
"""
from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import re
import threading
import time
import zlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from bestiary import __version__

USER_AGENT = f"bestiary/{__version__} (+https://github.com/bestiary-dev/bestiary; dataset research)"
DEFAULT_RATES = {  # requests per second each archive asks for
    "xeno-canto.org": 1.0,
    "api.inaturalist.org": 1.0,
    "search.macaulaylibrary.org": 1.0,
    "api.gbif.org": 5.0,
}


_SECRET_PARAM = re.compile(r"((?:^|[?&;])(?:key|api_key|apikey|token|access_token)=)[^&\s'\"]*", re.I)


class RedactSecrets(logging.Filter):
    """urllib3 logs request URLs at DEBUG; a key in a query string must not reach a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(_SECRET_PARAM.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = _SECRET_PARAM.sub(r"\1***", record.msg)
        return True


for _name in ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.poolmanager", "urllib3.connection",
              "urllib3.response"):  # a filter acts only on the logger a record starts at
    logging.getLogger(_name).addFilter(RedactSecrets())


class FetchError(RuntimeError):
    """A request that failed for good (after retries); `reason` is a reject code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Pacer:
    """At most `rate` requests per second, with no burst: time is cut into ticks of 1/rate s on the wall
    clock and each request takes the next free tick.  One pacer per host and process; the stages give
    a rate-limited host to one process at a time (pipelines/hosts.py), so the rate holds for the run."""

    def __init__(self, rate: float, clock=time.time, sleep=time.sleep):
        self.tick = 1.0 / rate
        self.clock, self.sleep = clock, sleep
        self.last: int | None = None
        self.lock = threading.Lock()

    def acquire(self) -> None:
        with self.lock:
            k = math.ceil(self.clock() / self.tick)
            if self.last is not None and k <= self.last:
                k = self.last + 1
            self.last = k
        wait = k * self.tick - self.clock()
        if wait > 0:
            self.sleep(wait)


AUDIO_TYPES = ("audio/", "application/octet-stream", "binary/octet-stream")  # what a media URL may answer
IMAGE_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")

# failures worth another try: the next answer may well be whole
TRANSIENT = {"http_body_incomplete", "http_timeout", "http_connection", "http_retries_exhausted", "invalid_json",
             "truncated_encoding"}


@dataclass
class HttpPolicy:
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    retries: int = 5                 # statuses 429/5xx, connect and read errors; each attempt is paced
    body_retries: int = 3            # ours: bodies cut short, invalid JSON, an HTML page instead of JSON
    backoff: float = 0.5
    max_body_bytes: int = 512 * 1024 * 1024
    rates: dict[str, float] = field(default_factory=dict)  # host -> requests/s; unknown hosts unlimited
    offline: bool = False            # a rebuild: every request is refused, everything must come from caches
    download_deadline_s: float = 1800.0   # a whole body, however it trickles in
    min_rate_bps: float = 1024.0          # after `slow_grace_s`, a body slower than this is abandoned
    slow_grace_s: float = 30.0
    max_redirects: int = 5


RETRY_STATUS = (429, 500, 502, 503, 504)
MAX_RETRY_AFTER = 120.0  # seconds: a longer Retry-After is obeyed up to this


def make_session(policy: HttpPolicy) -> requests.Session:
    """A session without urllib3's own retries: every attempt goes through the host's pacer (HttpClient)."""
    s = requests.Session()
    s.max_redirects = policy.max_redirects
    adapter = HTTPAdapter(max_retries=Retry(total=0, connect=0, read=0, redirect=10, status=0,
                                             raise_on_status=False, raise_on_redirect=True), pool_maxsize=16)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    s.headers["User-Agent"] = USER_AGENT
    s.headers["Accept-Encoding"] = "gzip, deflate"   # what _get_bytes decodes itself, strictly
    return s


def check_url(url: str) -> None:
    """Only absolute http(s) URLs with a host are fetched: a relative path, a scheme-less or a file:// URL
    from an archive is a reject, never a read of this machine's files."""
    try:
        parts = urlsplit(url or "")
    except ValueError:
        raise FetchError("bad_url", f"not a URL: {str(url)[:80]!r}") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise FetchError("bad_url", f"not an absolute http(s) URL: {_safe(str(url))[:80]!r}")


def retry_after(resp: requests.Response) -> float | None:
    """Seconds a 429/503 asks us to wait (Retry-After in seconds or as an HTTP date), else None."""
    value = (resp.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HttpClient:
    """One session and one pacer per host, shared by the threads of one process."""

    def __init__(self, policy: HttpPolicy | None = None):
        self.policy = policy or HttpPolicy()
        self.session = make_session(self.policy)
        self._buckets: dict[str, Pacer] = {}
        self._lock = threading.Lock()
        self.requests_made = 0

    def _pacer(self, host: str) -> Pacer | None:
        rate = rate_for(host, self.policy)
        if not rate:
            return None
        with self._lock:
            return self._buckets.setdefault(host, Pacer(rate))

    def _backoff(self, attempt: int) -> float:
        return self.policy.backoff * 2 ** attempt * random.uniform(0.75, 1.25)

    def get(self, url: str, params: dict | None = None, expect: tuple[str, ...] = ()) -> requests.Response:
        """GET with the policy; raises FetchError with a reason code on final failure.  429 and 5xx are
        retried with backoff (Retry-After honoured), connect and read errors too; each attempt takes a tick
        of the host's pacer, so retries count against its rate."""
        if self.policy.offline:
            raise FetchError("offline", f"not in the caches: {_safe(url)}")
        check_url(url)
        host = urlsplit(url).netloc
        pacer = self._pacer(host)
        for attempt in range(self.policy.retries + 1):
            last = attempt == self.policy.retries
            if pacer:
                pacer.acquire()
            self.requests_made += 1
            try:
                resp = self.session.get(url, params=params, stream=True,
                                        timeout=(self.policy.connect_timeout, self.policy.read_timeout))
            except requests.exceptions.Timeout as err:
                if last:
                    raise FetchError("http_timeout", _safe(str(err))) from None
            except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as err:
                if last:
                    raise FetchError("http_connection", _safe(str(err))) from None
            except requests.exceptions.TooManyRedirects:
                raise FetchError("redirect_loop", f"over {self.policy.max_redirects} redirects from {_safe(url)}") from None
            except (requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema,
                    requests.exceptions.InvalidURL, requests.exceptions.InvalidHeader) as err:
                raise FetchError("bad_redirect", f"{type(err).__name__} from {_safe(url)}") from None
            except (requests.exceptions.RequestException, ValueError, OSError) as err:
                raise FetchError("http_error", f"{type(err).__name__} from {_safe(url)}") from None
            else:
                if resp.status_code in RETRY_STATUS and not last:
                    wait = retry_after(resp)
                    resp.close()
                    time.sleep(min(MAX_RETRY_AFTER, wait if wait is not None else self._backoff(attempt)))
                    continue
                if resp.status_code >= 400:
                    resp.close()
                    raise FetchError(f"http_{resp.status_code}", _safe(url))
                ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if expect and not any(ctype.startswith(e) for e in expect):
                    resp.close()
                    raise FetchError("bad_content_type", f"{ctype or 'none'} for {_safe(url)}")
                return resp
            time.sleep(self._backoff(attempt))
        raise FetchError("http_retries_exhausted", _safe(url))  # not reached: the last attempt raises

    def with_retries(self, fn, retry_on: set[str] = TRANSIENT):
        """Call fn, again after a jittered backoff while it fails with a transient reason."""
        for attempt in range(self.policy.body_retries + 1):
            try:
                return fn()
            except FetchError as err:
                if err.reason not in retry_on or attempt == self.policy.body_retries:
                    raise
                time.sleep(self.policy.backoff * 2 ** attempt * random.uniform(0.75, 1.25))

    def get_bytes(self, url: str, params: dict | None = None, expect: tuple[str, ...] = ()) -> bytes:
        return self.with_retries(lambda: self._get_bytes(url, params, expect))

    def _get_bytes(self, url: str, params: dict | None = None, expect: tuple[str, ...] = ()) -> bytes:
        """The whole body, or FetchError: too large, cut short (fewer bytes than declared, or a compressed
        stream that does not end), too slow (under `min_rate_bps` after the grace time) or past the
        deadline.  Reads return as soon as any bytes arrive, so a trickle cannot hide behind the read
        timeout, and a watchdog shuts the socket at the deadline."""
        resp = self.get(url, params=params, expect=expect)
        p = self.policy
        declared = int(resp.headers.get("Content-Length") or 0) if (resp.headers.get("Content-Length") or "").isdigit() else 0
        if declared > p.max_body_bytes:
            resp.close()
            raise FetchError("body_too_large", f"{declared} bytes")
        encoding = (resp.headers.get("Content-Encoding") or "").strip().lower()
        if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
            resp.close()
            raise FetchError("unsupported_encoding", f"{encoding[:40]} from {_safe(url)}")
        decoder = zlib.decompressobj(47) if encoding in ("gzip", "x-gzip", "deflate") else None
        start = time.monotonic()
        watchdog = threading.Timer(p.download_deadline_s, resp.raw.shutdown)
        watchdog.daemon = True
        watchdog.start()
        chunks, size, got = [], 0, 0
        try:
            while True:
                chunk = resp.raw.read1(1 << 16, decode_content=False)
                if not chunk:
                    break
                got += len(chunk)
                if decoder is not None:
                    chunk = decoder.decompress(chunk, p.max_body_bytes + 1 - size)
                size += len(chunk)
                if size > p.max_body_bytes:
                    raise FetchError("body_too_large", f"over {p.max_body_bytes} bytes")
                chunks.append(chunk)
                elapsed = time.monotonic() - start
                if elapsed > p.download_deadline_s:
                    raise FetchError("download_deadline", f"over {p.download_deadline_s:.0f} s for {_safe(url)}")
                if elapsed > p.slow_grace_s and got / elapsed < p.min_rate_bps:
                    raise FetchError("download_too_slow", f"{got / elapsed:.0f} B/s from {_safe(url)}")
        except FetchError:
            raise
        except Exception as err:  # urllib3, socket and zlib errors alike: the body did not arrive whole
            if time.monotonic() - start >= p.download_deadline_s:
                raise FetchError("download_deadline", f"over {p.download_deadline_s:.0f} s for {_safe(url)}") from None
            raise FetchError("http_body_incomplete", f"{type(err).__name__}: {_safe(str(err))}") from None
        finally:
            watchdog.cancel()
            resp.close()
        if declared and got < declared:
            raise FetchError("http_body_incomplete", f"{got} of {declared} bytes from {_safe(url)}")
        if decoder is not None:
            try:
                chunks.append(decoder.flush())
            except zlib.error:
                raise FetchError("truncated_encoding", f"{encoding} stream broken from {_safe(url)}") from None
            if not decoder.eof:
                raise FetchError("truncated_encoding", f"{encoding} stream cut short from {_safe(url)}")
        return b"".join(chunks)

    def get_json(self, url: str, params: dict | None = None):
        """A JSON answer; an HTML error page, a body cut short or broken JSON is retried, then FetchError."""
        def once():
            body = self._get_bytes(url, params=params, expect=("application/json", "text/json"))
            try:
                return json.loads(body)
            except ValueError:
                raise FetchError("invalid_json", f"{len(body)} bytes from {_safe(url)}") from None
        return self.with_retries(once, TRANSIENT | {"bad_content_type"})


def rate_for(host: str, policy: HttpPolicy) -> float | None:
    """Requests per second allowed to a host: the config's, else the archive's documented ask, else None."""
    return policy.rates.get(host) or DEFAULT_RATES.get(host.split(":")[0])


def _safe(text: str) -> str:
    """Strip query strings (they may carry keys) from text that goes into logs or rejects."""
    return re.sub(r"\?[^\s'\"]*", "?…", text)[:300]


def policy_from(http, sources=()) -> HttpPolicy:
    """An HttpPolicy from a config's `http` section and its sources' `requests_per_second`."""
    from urllib.parse import urlsplit
    rates = {}
    for s in sources:
        if s.requests_per_second:
            rates[urlsplit(s.base_url).netloc] = s.requests_per_second
            if s.media_base_url:
                rates[urlsplit(s.media_base_url).netloc] = s.requests_per_second
    return HttpPolicy(connect_timeout=http.connect_timeout, read_timeout=http.read_timeout, retries=http.retries,
                      body_retries=http.body_retries, backoff=http.backoff,
                      max_body_bytes=int(http.max_body_mb * 1024 * 1024), rates=rates, offline=http.offline,
                      download_deadline_s=http.download_deadline_s, min_rate_bps=http.min_download_bps,
                      slow_grace_s=http.slow_grace_s, max_redirects=http.max_redirects)
