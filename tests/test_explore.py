"""The explore page: the dataset overview and search, served by Flask on 127.0.0.1, driven by a real
headless Chromium over the DevTools protocol (Debian's `chromium`, which `make test` installs)."""
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request

import pytest

from bestiary.search.explore import create_app
from bestiary.search.index import Index


@pytest.fixture(scope="module")
def explore_url(tiny_build, search_model, tmp_path_factory):
    cfg, _ = tiny_build
    idx = str(tmp_path_factory.mktemp("explore") / "idx")
    Index.create(idx, search_model).add_shards(os.path.join(cfg.out, "shards"))
    from werkzeug.serving import make_server
    server = make_server("127.0.0.1", 0, create_app(cfg.out, idx), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", cfg
    server.shutdown()


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def test_overview_and_search_over_http(explore_url):
    url, cfg = explore_url
    status, kind, body = get(url + "/")
    page = body.decode()
    assert status == 200 and "text/html" in kind
    manifest = json.load(open(os.path.join(cfg.out, "shards", "manifest.json")))
    for split, s in manifest["splits"].items():
        assert re.search(rf"<td>{split}</td><td class=\"num\">{s['samples']}</td>", page)
    assert "Strix aluco" in page and "Tawny Owl" in page
    stats = json.load(open(os.path.join(cfg.out, "stats.json")))
    for reason, n in stats["rejects_by_reason"].items():
        assert f"<td>{reason}</td><td class=\"num\">{n}</td>" in page
    plots = re.findall(r'src="(/card/[^"]+\.png)"', page)
    assert plots and all(get(url + p)[1] == "image/png" for p in plots)
    status, _, body = get(url + "/api/search?q=Tawny+Owl+calling&top=3")
    hits = json.loads(body)["hits"]
    assert status == 200 and len(hits) == 3 and hits[0]["score"] >= hits[-1]["score"]
    status, kind, wav = get(url + f"/audio/{hits[0]['id']}.wav")
    assert status == 200 and kind == "audio/wav" and wav[:4] == b"RIFF"
    status, kind, png = get(url + f"/spectrogram/{hits[0]['id']}.png")
    assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
    assert get(url + "/audio/999999.wav")[0] == 404
    assert get(url + "/card/../../etc/passwd")[0] == 404
    status, _, body = get(url + "/api/search?q=owl&bbox=1,2")
    assert status == 400 and "bbox" in json.loads(body)["error"]


class Chromium:
    """Headless Chromium on a fresh profile, one page, commands over its DevTools websocket."""

    FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--remote-debugging-port=0",
             "--remote-allow-origins=*"]

    def __init__(self, binary: str, profile: str):
        self.proc = subprocess.Popen([binary, *self.FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline, port = time.time() + 60, None
        while port is None and time.time() < deadline:
            line = self.proc.stderr.readline()
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                port = int(m.group(1))
            elif not line and self.proc.poll() is not None:
                break
        assert port, "chromium did not start its DevTools endpoint"
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()  # drain
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        import websocket
        self.ws = websocket.create_connection(ws_url, timeout=30)
        self.n = 0

    def call(self, method: str, **params) -> dict:
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(msg["error"])
                return msg["result"]

    def js(self, expression: str, promise: bool = False):
        r = self.call("Runtime.evaluate", expression=expression, awaitPromise=promise, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(r["exceptionDetails"])
        return r["result"].get("value")

    def wait(self, expression: str, timeout: float = 30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {expression}")

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def chromium(tmp_path):
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        if os.environ.get("BESTIARY_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (make test installs Debian's chromium package)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    browser = Chromium(binary, str(tmp_path / "profile"))
    yield browser
    browser.close()


def test_search_in_a_real_browser_plays_the_window(explore_url, chromium):
    url, _ = explore_url
    chromium.call("Page.enable")
    chromium.call("Page.navigate", url=url + "/")
    chromium.wait("document.readyState === 'complete' && document.querySelector('h1') !== null")
    assert chromium.js("document.querySelector('h1').textContent") == "dataset"
    assert chromium.js("[...document.querySelectorAll('.plots img')].every(i => i.complete && i.naturalWidth > 0)")
    # type a query into the page's search box and submit it, as a user does
    chromium.js("document.querySelector('input[name=q]').value = 'Tawny Owl calling';"
                "document.querySelector('form').submit()")
    n = chromium.wait("location.pathname === '/search' && document.readyState === 'complete' && "
                      "document.querySelectorAll('.result').length")
    assert n == 12
    assert chromium.js("new URLSearchParams(location.search).get('q')") == "Tawny Owl calling"
    src = chromium.js("document.querySelector('.result audio').getAttribute('src')")
    assert re.fullmatch(r"/audio/\d+\.wav", src)
    # the browser itself decodes the window: its duration is the window's
    duration = chromium.js("""new Promise(done => {
        const a = document.querySelector('.result audio');
        if (a.readyState >= 1) return done(a.duration);
        a.addEventListener('loadedmetadata', () => done(a.duration));
        a.addEventListener('error', () => done(-1));
        a.load(); })""", promise=True)
    assert duration == pytest.approx(10.0, abs=0.05)
    assert chromium.wait("(() => { const i = document.querySelector('.result img');"
                         " return i.complete && i.naturalWidth > 0 })()")
    assert "Tawny Owl" in chromium.js("document.body.innerText")
