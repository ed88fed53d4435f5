"""`bestiary serve-sample`: the archives' real routes and formats on 127.0.0.1.

Xeno-canto `/api/3/recordings` and `/{id}/download`; iNaturalist
`/v1/observations`, `/v1/taxa`, `/sounds/…`, `/photos/…`; Macaulay-style
`/api/v1/search` and its asset URLs; GBIF `/v1/species/match`.  `/_stats`
reports requests per route (tests and benches count with it).
"""
from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections import Counter
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from collections import deque

from bestiary.sample_archive import chat, faults, formats
from bestiary.sample_archive.generate import Archive, build_archive, render_audio, render_image
from bestiary.sample_archive.species import DEMO, World
from bestiary.sample_archive.world import Difficulty



class SampleArchive:
    """The archive's data plus request counters; shared by the handler threads."""

    def __init__(self, seed: int = 7, scale: float = 1.0, latency_ms: float = 0.0, api_key: str | None = None,
                 max_seconds: float | None = None, audio_format: str | None = None, world: World = DEMO,
                 difficulty: Difficulty = Difficulty(), max_rate: int | None = None):
        self.archive: Archive = build_archive(seed, scale, max_seconds, audio_format, world, difficulty, max_rate)
        self.latency = latency_ms / 1000
        self.api_key = api_key
        self.counts: Counter = Counter()
        self.lock = threading.Lock()
        self.by_name = {s.name.lower(): s for s in self.archive.species}
        self.by_inat = {s.inat_id: s for s in self.archive.species}
        self.hidden: set[tuple[str, int]] = set()   # records withheld until revealed (incremental tests)
        self.chat_faults: deque[str] = deque()      # faults for the next chat-completions requests, in order
        # (archive, id) -> (body, content type, declared length or None): bad media for tests
        self.media_override: dict[tuple[str, int], tuple[bytes, str, int | None]] = {}
        self.media_faults: dict[tuple[str, int], str] = {}  # (archive, id) -> a fault on that medium, every time
        self.chat_slow_s = 3.0
        self.slow_s = 3.0
        self.faults: dict[str, deque[str]] = {}      # route -> faults for its next requests
        # (archive, id) -> fields to put into that record's JSON in listings (hostile tests: bad URLs, null ids)
        self.record_patches: dict[tuple[str, int], dict] = {}
        self.request_log: list[tuple[float, str]] | None = None  # (monotonic time, route) when a bench asks
        self.renders: dict[tuple, threading.Lock] = {}   # medium -> the lock its render holds (_rendering)

    def add_faults(self, route: str, *names: str) -> None:
        """Queue faults for a route's next requests ('name*' stays for every request)."""
        for n in names:
            if n.rstrip("*") not in faults.ALL:
                raise ValueError(f"unknown fault {n!r} (known: {', '.join(sorted(faults.ALL))})")
        with self.lock:
            self.faults.setdefault(route, deque()).extend(names)

    def take_fault(self, route: str) -> str | None:
        with self.lock:
            q = self.faults.get(route)
            if not q:
                return None
            name = q[0]
            if name.endswith("*"):
                return name[:-1]
            return q.popleft()

    def count(self, route: str) -> None:
        with self.lock:
            self.counts[route] += 1
            if self.request_log is not None:
                self.request_log.append((time.monotonic(), route))

    def _rendering(self, *key) -> threading.Lock:
        """One lock per medium: a request for a medium that is being rendered waits for that render (and then
        takes it from the cache) instead of starting its own.  Rendering an MP3 takes about half a second, so
        a client's retries after its read timeout used to pile up parallel renders of one medium that slowed
        one another past every further timeout."""
        with self.lock:
            return self.renders.setdefault(key, threading.Lock())

    def audio(self, archive: str, rid: int) -> tuple[bytes, str] | None:
        with self._rendering("audio", archive, rid):
            return self._audio(archive, rid)

    def image(self, archive: str, pid: int, width: int | None) -> bytes | None:
        with self._rendering("image", archive, pid, width):
            return self._image(archive, pid, width)

    @lru_cache(maxsize=256)
    def _audio(self, archive: str, rid: int) -> tuple[bytes, str] | None:
        rec = self.archive.recordings.get((archive, rid))
        return render_audio(rec, self.archive.difficulty, self.archive.by_name) if rec else None

    @lru_cache(maxsize=256)
    def _image(self, archive: str, pid: int, width: int | None) -> bytes | None:
        photo = self.archive.photos.get((archive, pid))
        return render_image(photo, width, self.archive.difficulty) if photo else None


def _qs(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


class Handler(BaseHTTPRequestHandler):
    server_version = "bestiary-sample/1"
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else every keep-alive request waits ~40 ms
    state: SampleArchive  # set on the subclass made by make_server

    def log_message(self, *args) -> None:  # quiet: tests count through /_stats
        pass

    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        fault = getattr(self, "fault", None)
        if fault in faults.BODY and status == 200:
            body, ctype, declared = faults.mangle(fault, body, ctype)
            if declared is not None:
                return self._short_send(body, ctype, declared)
        self._plain_send(status, body, ctype, headers)

    def _short_send(self, body: bytes, ctype: str, declared: int) -> None:
        """Declare more than is sent, then close: the connection drops mid-body."""
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(declared))
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _plain_send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _media(self, key: tuple[str, int]) -> bool:
        """Serve an override or a fault for this medium if a test set one; True when it did."""
        fault = self.state.media_faults.get(key)
        if fault:
            self.fault = fault
            if faults.answer_before(self, fault, self.state.slow_s):
                return True
            if fault in faults.HOSTILE_MEDIA:
                body = self._media_body(key)
                if body is not None:
                    faults.hostile_media(self, fault, *body)
                    return True
            return False  # body-level faults: the route answers and _send mangles it
        got = self.state.media_override.get(key)
        if got is None:
            return False
        body, ctype, declared = got
        if declared is not None and declared != len(body):
            self._short_send(body, ctype, declared)
        else:
            self._plain_send(200, body, ctype)
        return True

    def _patched(self, archive: str, rid: int, record: dict) -> dict:
        patch = self.state.record_patches.get((archive, rid))
        return {**record, **patch} if patch else record

    def _media_body(self, key: tuple[str, int]) -> tuple[bytes, str] | None:
        archive, rid = key
        if (archive, rid) in self.state.archive.recordings:
            return self.state.audio(archive, rid)
        body = self.state.image(archive, rid, None)
        return (body, "image/jpeg") if body else None

    def _json(self, obj, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json; charset=utf-8")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_POST(self) -> None:
        st = self.state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if urlsplit(self.path).path.rstrip("/") != "/v1/chat/completions":
            st.count("not_found")
            return self._json({"error": "Not found", "status": 404}, 404)
        st.count("chat_completions")
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self._json({"error": {"message": "invalid JSON body"}}, 400)
        with st.lock:
            fault = st.chat_faults.popleft() if st.chat_faults else None
        fault = self.headers.get("X-Bestiary-Fault") or fault
        chat.answer(self, st, body, fault)

    def do_GET(self) -> None:
        st = self.state
        if st.latency:
            time.sleep(st.latency)
        path = urlsplit(self.path).path
        base = f"http://{self.headers.get('Host', '127.0.0.1')}"
        q = _qs(self.path)
        for pattern, route in ROUTES:
            m = re.fullmatch(pattern, path)
            if m:
                st.count(route.__name__)
                self.fault = self.headers.get("X-Bestiary-Fault") or st.take_fault(route.__name__)
                self.fault = None if self.fault == "none" else self.fault
                if self.fault and faults.answer_before(self, self.fault, st.slow_s):
                    return None
                return route(self, st, base, q, *m.groups())
        st.count("not_found")
        self._json({"error": "Not found", "status": 404}, 404)

    # ------------------------------------------------------------ routes
    def _vanish(self, st, archive: str, items: list, at: int) -> list:
        """On a 'vanish' fault the record at `at` is withdrawn from the archive for good."""
        if self.fault == "vanish" and len(items) > at:
            with st.lock:
                st.hidden.add((archive, items[at].id))
            return items[:at] + items[at + 1:]
        return items

    def index(self, st, base, q) -> None:
        self._json({"service": "bestiary sample archive", "seed": st.archive.seed,
                    "species": len(st.archive.species)})

    def stats(self, st, base, q) -> None:
        with st.lock:
            self._json(dict(st.counts))

    def xc_recordings(self, st, base, q) -> None:
        if st.api_key is not None and q.get("key") != st.api_key or st.api_key is None and not q.get("key"):
            return self._json({"error": "client_error", "message": "Missing or invalid 'key' parameter. "
                               "Visit https://xeno-canto.org/account to retrieve your API key."}, 401)
        query = q.get("query", "")
        if not formats.XC_TAG.search(query):
            return self._json({"error": "client_error", "message": "Query must contain at least one tag."}, 400)
        per_page = max(50, min(500, int(q.get("per_page", 100))))
        page = max(1, int(q.get("page", 1)))
        # a vanish on a later page withdraws a record from an earlier one: every later record shifts back
        recs = [r for r in st.archive.xc if ("xc", r.id) not in st.hidden and formats.xc_filter(query, r)]
        recs = self._vanish(st, "xc", recs, 0)
        pages = max(1, -(-len(recs) // per_page))
        lo = (page - 1) * per_page
        chunk = recs[lo - (1 if self.fault == "duplicate" and lo else 0): page * per_page]
        if self.fault == "endless_pages":  # always one page more, the last one over and over
            chunk = chunk or recs[(pages - 1) * per_page: pages * per_page]
            pages = page + 1
        listed = [self._patched("xc", r.id, formats.xc_recording(r, base)) for r in chunk]
        if self.fault == "conflict" and page > 1 and recs:  # the first record again, another species and licence
            first = formats.xc_recording(recs[0], base)
            listed.append({**first, "gen": "Strix", "sp": "aluco", "en": "Tawny Owl",
                           "lic": "//creativecommons.org/licenses/by-nd/4.0/"})
        self._json({"numRecordings": str(len(recs)), "numSpecies": str(len({r.species.name for r in recs})),
                    "page": page, "numPages": pages, "recordings": listed})

    def xc_download(self, st, base, q, rid) -> None:
        if self._media(("xc", int(rid))):
            return
        got = st.audio("xc", int(rid))
        if got is None:
            return self._send(404, b"<html><body>Not found</body></html>", "text/html")
        self._send(200, got[0], got[1])

    def inat_observations(self, st, base, q) -> None:
        per_page = max(1, min(200, int(q.get("per_page", 30))))
        obs = [o for o in st.archive.inat if ("inat", o.id) not in st.hidden]
        if q.get("sounds") == "true":
            obs = [o for o in obs if o.sounds]
        if q.get("photos") == "true":
            obs = [o for o in obs if o.photos]
        if "taxon_id" in q:
            want = {int(t) for t in q["taxon_id"].split(",")}
            obs = [o for o in obs if want & set(formats.inat_taxon(o.species)["ancestor_ids"])]
        if "id" in q:
            ids = {int(i) for i in q["id"].split(",")}
            obs = [o for o in obs if o.id in ids]
        if "updated_since" in q:
            obs = [o for o in obs if o.updated >= q["updated_since"]]
        if "id_above" in q:
            obs = [o for o in obs if o.id > int(q["id_above"])]
        if "id_below" in q:
            obs = [o for o in obs if o.id < int(q["id_below"])]
        obs = self._vanish(st, "inat", obs, 0)
        if q.get("order_by") == "id" and q.get("order") == "desc":
            obs = obs[::-1]
        page = max(1, int(q.get("page", 1)))
        if page * per_page > 10000:
            return self._json({"error": "You reached the maximum number of results (10000)", "status": 422}, 422)
        chunk = obs[(page - 1) * per_page: page * per_page]
        if self.fault == "duplicate" and "id_above" in q:  # the record at the cursor again
            chunk = [o for o in st.archive.inat if o.id == int(q["id_above"])] + chunk
        self._json({"total_results": len(obs), "page": page, "per_page": per_page,
                    "results": [self._patched("inat", o.id, formats.inat_observation(o, base)) for o in chunk]})

    def inat_taxon(self, st, base, q, tid) -> None:
        sp = st.by_inat.get(int(tid))
        if sp is None:
            return self._json({"total_results": 0, "page": 1, "per_page": 30, "results": []})
        self._json({"total_results": 1, "page": 1, "per_page": 1, "results": [formats.inat_taxon(sp, True)]})

    def inat_taxa(self, st, base, q) -> None:
        needle = q.get("q", "").lower()
        hits = [s for s in st.archive.species if needle and (needle in s.name.lower() or needle in s.common.lower())]
        self._json({"total_results": len(hits), "page": 1, "per_page": 30,
                    "results": [formats.inat_taxon(s, True) for s in hits[:30]]})

    def inat_sound(self, st, base, q, sid, ext) -> None:
        if self._media(("inat", int(sid))):
            return
        got = st.audio("inat", int(sid))
        if got is None:
            return self._json({"error": "Not found", "status": 404}, 404)
        self._send(200, got[0], got[1])

    def inat_photo(self, st, base, q, pid, size, ext) -> None:
        if self._media(("inat", int(pid))):
            return
        body = st.image("inat", int(pid), formats.INAT_SIZES.get(size))
        if body is None:
            return self._json({"error": "Not found", "status": 404}, 404)
        self._send(200, body, "image/jpeg")

    def ml_search(self, st, base, q) -> None:
        mtype = q.get("mediaType", "audio")
        items = st.archive.ml_audio if mtype == "audio" else st.archive.ml_photos if mtype == "photo" else []
        items = [i for i in items if ("ml", i.id) not in st.hidden]
        if q.get("taxonCode"):
            codes = set(q["taxonCode"].split(","))
            items = [i for i in items if i.species.code in codes]
        count = max(1, min(100, int(q.get("count", 30))))
        after = int(base64.urlsafe_b64decode(q["initialCursorMark"]).decode()) if q.get("initialCursorMark") else -1
        rest = self._vanish(st, "ml", [i for i in items if i.id > after], 0)
        chunk = rest[:count]
        if self.fault == "duplicate" and after >= 0:
            chunk = [i for i in items if i.id == after] + chunk
        last = chunk[-1].id if chunk else after
        nxt = base64.urlsafe_b64encode(str(last).encode()).decode()
        if self.fault == "cursor_cycle":  # A -> B -> A ...: the cursor after the second page is the first's
            first = base64.urlsafe_b64encode(str(items[0].id if items else 0).encode()).decode()
            nxt = first if q.get("initialCursorMark") and q["initialCursorMark"] != first else \
                base64.urlsafe_b64encode(str(items[min(1, len(items) - 1)].id if items else 1).encode()).decode()
        self._json({"results": {"count": len(items), "nextCursorMark": nxt,
                                "content": [formats.ml_item(i) for i in chunk]}})

    def ml_image(self, st, base, q, aid, size) -> None:
        if self._media(("ml", int(aid))):
            return
        body = st.image("ml", int(aid), int(size))
        if body is None:
            return self._send(404, b"", "text/plain")
        self._send(200, body, "image/jpeg")

    def ml_audio(self, st, base, q, aid) -> None:
        if self._media(("ml", int(aid))):
            return
        got = st.audio("ml", int(aid))
        if got is None:
            return self._send(404, b"", "text/plain")
        self._send(200, got[0], "audio/mpeg")

    @staticmethod
    def _mirror_hidden(st, occ: dict) -> bool:
        """GBIF publishes a mirror only after its source archive has the record."""
        ref = str(occ.get("references") or "")
        for archive, pattern in (("xc", r"xeno-canto\.org/(\d+)"), ("inat", r"observations/(\d+)")):
            m = re.search(pattern, ref)
            if m and (archive, int(m.group(1))) in st.hidden:
                return True
        return False

    def gbif_occurrences(self, st, base, q) -> None:
        occs = [o for o in formats.gbif_occurrences(st.archive, base) if ("gbif", o["key"]) not in st.hidden
                and not self._mirror_hidden(st, o)]
        if q.get("mediaType"):
            want = {"Sound": "Sound", "StillImage": "StillImage"}.get(q["mediaType"], q["mediaType"])
            occs = [o for o in occs if any(m["type"] == want for m in o["media"])]
        if q.get("taxonKey"):
            key = int(q["taxonKey"])
            occs = [o for o in occs if key in {o.get(f"{r}Key") for r in ("kingdom", "phylum", "class", "order",
                                                                          "family", "genus", "species")}]
        if q.get("datasetKey"):
            occs = [o for o in occs if o["datasetKey"] == q["datasetKey"]]
        limit, offset = min(300, int(q.get("limit", 20))), int(q.get("offset", 0))
        if offset + limit > 100000:
            return self._plain_send(400, b"Max offset of 100001 exceeded", "text/plain")
        if self.fault == "vanish" and occs:  # withdrawn from an earlier page: later ones shift back
            with st.lock:
                st.hidden.add(("gbif", occs[0]["key"]))
            occs = occs[1:]
        page = occs[max(0, offset - (1 if self.fault == "duplicate" and offset else 0)): offset + limit]
        self._json({"offset": offset, "limit": limit, "endOfRecords": offset + limit >= len(occs),
                    "count": len(occs), "results": page, "facets": []})

    def gbif_media(self, st, base, q, rid) -> None:
        if self._media(("gbif", int(rid))):
            return
        got = st.audio("gbif", int(rid))
        if got is None:
            return self._send(404, b"", "text/plain")
        self._send(200, got[0], got[1])

    def gbif_match(self, st, base, q) -> None:
        name = " ".join(q.get("name", "").split()[:2]).lower()
        sp = st.by_name.get(name)
        genus = name.split()[0].capitalize() if name else None
        of_genus = next((s for s in st.archive.species if s.genus == genus), None) if genus and not sp else None
        self._json(formats.gbif_match(sp, of_genus))


ROUTES = [
    (r"/", Handler.index),
    (r"/_stats", Handler.stats),
    (r"/api/3/recordings", Handler.xc_recordings),
    (r"/(\d+)/download", Handler.xc_download),
    (r"/v1/observations", Handler.inat_observations),
    (r"/v1/taxa/(\d+)", Handler.inat_taxon),
    (r"/v1/taxa", Handler.inat_taxa),
    (r"/sounds/(\d+)\.(mp3|wav|m4a)", Handler.inat_sound),
    (r"/photos/(\d+)/(square|small|medium|large|original)\.(jpe?g|png)", Handler.inat_photo),
    (r"/api/v1/search", Handler.ml_search),
    (r"/api/v1/asset/(\d+)/(320|480|640|900|1200|1800|2400)", Handler.ml_image),
    (r"/api/v2/asset/(\d+)/mp3", Handler.ml_audio),
    (r"/v1/species/match", Handler.gbif_match),
    (r"/v1/occurrence/search", Handler.gbif_occurrences),
    (r"/gbif-media/(\d+)\.wav", Handler.gbif_media),
]


def make_server(host: str = "127.0.0.1", port: int = 0, **kwargs) -> tuple[ThreadingHTTPServer, SampleArchive]:
    state = SampleArchive(**kwargs)
    handler = type("SampleHandler", (Handler,), {"state": state})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server, state


def start_in_thread(**kwargs) -> tuple[ThreadingHTTPServer, SampleArchive, str]:
    """A server on a free port in a background thread; returns its base URL."""
    server, state = make_server(**kwargs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return server, state, f"http://{host}:{port}"
