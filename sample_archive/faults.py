"""Fault injection for the sample archive: what the real internet does to a crawler.

A fault is chosen per route, from a queue on the server state (`SampleArchive.add_faults`,
or `serve-sample --fault ROUTE=FAULT`) or from an `X-Bestiary-Fault` request header.  A
name ending in `*` stays for every request on the route; otherwise it is used once.

Faults answered before the route runs: 429 (Retry-After in seconds), 429date
(Retry-After as an HTTP date), 500, 502, 503, 404, 410, slow (past a client's read
timeout), html_200 (an HTML error page with status 200).  Faults applied to what the
route answers: drop (the connection closes mid-body), truncated_json, invalid_json,
wrong_type (media served as text/html), empty, oversized (a declared body far over
any limit), corrupt_mp3.  Faults the paging routes act on: duplicate (the previous
page's last record again), vanish (a record disappears between pages), endless_pages
(Xeno-canto: numPages always one more, the last page over and over), cursor_cycle
(Macaulay: the cursor goes A -> B -> A), conflict (Xeno-canto: a record again on a later
page with another species and licence).  Hostile media (per medium, `media_faults`):
redirect_file (302 to file://), redirect_loop (302 to itself), trickle (a byte a
second), gzip_cut (gzip-encoded, cut short, no Content-Length).  Listings can carry
patched records too (`record_patches`: bad media URLs, null ids).
"""
from __future__ import annotations

import email.utils
import time

import numpy as np

BEFORE = {"429", "429date", "500", "502", "503", "404", "410", "slow", "html_200"}
BODY = {"drop", "truncated_json", "invalid_json", "wrong_type", "empty", "oversized", "corrupt_mp3"}
PAGING = {"duplicate", "vanish", "endless_pages", "cursor_cycle", "conflict"}
HOSTILE_MEDIA = {"redirect_file", "redirect_loop", "trickle", "gzip_cut"}
ALL = BEFORE | BODY | PAGING | HOSTILE_MEDIA | {"none"}  # "none": answered normally (to aim at a later page)
HTML_ERROR = b"<!DOCTYPE html><html><head><title>Error</title></head><body><h1>Something went wrong</h1></body></html>"


def answer_before(handler, fault: str, slow_s: float) -> bool:
    """Answer the request outright for status-like faults; True when it did."""
    if fault == "slow":
        time.sleep(slow_s)
        return False  # then answer normally, too late for a client with a short read timeout
    if fault in ("429", "429date"):
        retry = "1" if fault == "429" else email.utils.formatdate(time.time() + 1, usegmt=True)
        handler._plain_send(429, b'{"error": "Too many requests"}', "application/json", {"Retry-After": retry})
        return True
    if fault in ("500", "502", "503", "404", "410"):
        handler._plain_send(int(fault), b'{"error": "fault injected"}', "application/json")
        return True
    if fault == "html_200":
        handler._plain_send(200, HTML_ERROR, "text/html; charset=utf-8")
        return True
    return False


def hostile_media(handler, fault: str, body: bytes, ctype: str) -> None:
    """Media answers a careless or hostile server gives: a redirect to a local file, a redirect loop, a body
    sent a byte a second, a gzip-encoded body cut short with no Content-Length."""
    if fault in ("redirect_file", "redirect_loop"):
        where = "file:///etc/passwd" if fault == "redirect_file" else handler.path
        handler.send_response(302)
        handler.send_header("Location", where)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        return
    if fault == "trickle":
        handler.send_response(200)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        try:
            for i in range(len(body)):
                handler.wfile.write(body[i:i + 1])
                handler.wfile.flush()
                time.sleep(1.0)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return
    if fault == "gzip_cut":
        import gzip
        packed = gzip.compress(body, mtime=0)
        handler.send_response(200)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Connection", "close")
        handler.close_connection = True
        handler.end_headers()
        handler.wfile.write(packed[: len(packed) // 2])


def mangle(fault: str, body: bytes, ctype: str) -> tuple[bytes, str, int | None]:
    """(body, content type, declared length or None) for body-level faults."""
    if fault == "truncated_json":
        return body[: len(body) // 2], ctype, None
    if fault == "invalid_json":
        return b'{"results": [{"id": 1,, }', ctype, None
    if fault == "wrong_type":
        return HTML_ERROR, "text/html; charset=utf-8", None
    if fault == "empty":
        return b"", ctype, None
    if fault == "corrupt_mp3":
        # the same bytes as a generator over the body would give, without holding the server's GIL for a
        # quarter second a request: under retries those renders starved every other answer past the tests'
        # read timeout
        garbage = ((np.arange(max(0, len(body) - 4), dtype=np.int64) * 7919 + 13) % 251).astype(np.uint8).tobytes()
        return b"ID3\x03" + garbage, ctype, None
    if fault == "drop":
        return body[: len(body) // 2], ctype, len(body)
    if fault == "oversized":
        return b"", ctype, 50 * 1024**3
    return body, ctype, None
