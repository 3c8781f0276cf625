"""The study's HTML and the Snakemake report, opened from disk in headless chromium.

Chromium is driven through the DevTools protocol with a minimal WebSocket client from the standard
library (no websockets package): console errors, uncaught exceptions and failed loads are collected
by level, figures are checked to decode (naturalWidth > 0) and to not be blank.

1. comparison.html of a synthetic paper-like study (analysis.study.run_study): every <img> loaded,
   the comparison table with every claim row present, no console errors, a non-blank screenshot.
2. `snakemake --report` over rules/report.smk: a test Snakefile (rules/common.smk + rules/report.smk)
   runs the real `study` rule on synthetic runs of the default config, builds the report, and in
   chromium clicks Results > category > subcategory > every result's "eye" button: every PNG figure
   is displayed by the report app and decodes (naturalWidth > 0), screenshots are not blank, the
   embedded comparison.html carries the table with every claim row, and nothing logs an error. Needs
   `spemd study` (the CLI hook); skipped with the reason otherwise.
3. With SPEMD_FINISHED_RUN=<workflow dir of a finished default run>, `snakemake --report` of that run.

Skipped (with the reason) where chromium is not installed: apt-get install -y chromium.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_synthetic import CLAIM_IDS, transport_record, write_paper_like_study, write_run  # noqa: E402

BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian: apt-get install -y chromium)")



# ------------------------------------------------------------------- minimal DevTools client
class DevTools:
    """Headless chromium with one page, spoken to over the DevTools protocol (RFC 6455 WebSocket)."""

    def __init__(self, timeout=60.0):
        self.profile = tempfile.mkdtemp(prefix="spemd-chromium-")
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={self.profile}", "--remote-debugging-port=0", "--window-size=1400,1000",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port = None
        deadline = time.time() + timeout
        while port is None and time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError("chromium exited before DevTools started")
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                port = int(m.group(1))
        if port is None:
            raise RuntimeError("chromium DevTools endpoint not announced")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        self._connect(pages[0]["webSocketDebuggerUrl"])
        self._id = 0
        self.events = []
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable")

    def _connect(self, url):
        m = re.match(r"ws://([^:/]+):(\d+)(/.*)", url)
        host, port, path = m.group(1), int(m.group(2)), m.group(3)
        self.sock = socket.create_connection((host, port), timeout=self.timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RuntimeError("DevTools closed the WebSocket handshake")
            head += chunk
        head, self._buf = head.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError(f"DevTools handshake refused: {head[:200]!r}")

    def _send_frame(self, payload: bytes, opcode=1):
        mask = os.urandom(4)
        n = len(payload)
        hdr = bytes([0x80 | opcode])
        if n < 126:
            hdr += bytes([0x80 | n])
        elif n < 1 << 16:
            hdr += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            hdr += bytes([0x80 | 127]) + struct.pack(">Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(hdr + mask + masked)

    def _read(self, n):
        while len(self._buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise RuntimeError("DevTools WebSocket closed")
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _recv(self) -> dict:
        parts = []
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            data = self._read(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if opcode == 9:
                self._send_frame(data, opcode=10)
                continue
            if opcode == 8:
                raise RuntimeError("DevTools closed the connection")
            parts.append(data)
            if b0 & 0x80:
                return json.loads(b"".join(parts))

    def call(self, method, **params):
        self._id += 1
        self._send_frame(json.dumps({"id": self._id, "method": method, "params": params}).encode())
        while True:
            msg = self._recv()
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, method, timeout=30.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(e.get("method") == method for e in self.events):
                return
            self.sock.settimeout(max(0.1, deadline - time.time()))
            self.events.append(self._recv())
        raise TimeoutError(method)

    def open(self, path: Path):
        self.events.clear()
        self.call("Page.navigate", url=path.resolve().as_uri())
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"evaluate: {r['exceptionDetails'].get('text')}")
        return r["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors/assertions, uncaught exceptions and error-level log entries since the last open()."""
        self.call("Runtime.evaluate", expression="0")  # flush pending events
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console." + p["type"] + ": " + " ".join(str(a.get("value", a.get("description")))
                                                                 for a in p.get("args", [])))
            elif m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append("exception: " + str(d.get("exception", {}).get("description") or d.get("text")))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append("log: " + p["entry"].get("text", ""))
        return out

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def close(self):
        try:
            self.sock.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    b = DevTools()
    yield b
    b.close()


IMAGES_JS = """
(async () => {
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));
  return imgs.map(i => ({alt: i.alt, w: i.naturalWidth, h: i.naturalHeight}));
})()
"""


def _not_blank(png_bytes) -> bool:
    import matplotlib.image as mpimg
    import io

    a = mpimg.imread(io.BytesIO(png_bytes))
    return float(np.asarray(a)[..., :3].std()) > 0.01


# ------------------------------------------------------------------------------- 1: study page
def test_study_page_renders_every_figure_and_the_table(tmp_path, browser):
    from spemd.analysis.study import run_study

    paths, cfg = write_paper_like_study(tmp_path, temperatures=(353.0, 393.0), replicas=1)
    rec = run_study(paths, tmp_path / "study", cfg)
    page = tmp_path / "study" / "comparison.html"
    browser.open(page)
    imgs = browser.evaluate(IMAGES_JS)
    n_png = sum(1 for f in rec["figures"] if f.endswith(".png"))
    assert len(imgs) == n_png == 9, imgs  # 3 vs-wt, 2 Arrhenius, RDF + MSD overlays at 2 temperatures
    assert all(i["w"] > 100 and i["h"] > 100 for i in imgs), imgs
    ids = set(browser.evaluate("Array.from(document.querySelectorAll('#comparison tr[data-row-id]'))"
                               ".map(r => r.dataset.rowId)"))
    assert ids == CLAIM_IDS
    assert browser.evaluate("document.getElementById('figure-errors').textContent") == ""
    assert browser.evaluate("document.body.dataset.figuresChecked") == str(n_png)
    assert browser.errors() == []
    assert _not_blank(browser.screenshot())


def test_devtools_client_reports_a_broken_figure_and_console_errors(tmp_path, browser):
    """The checks above can fail: a missing image and a script error are both seen."""
    page = tmp_path / "broken.html"
    page.write_text('<html><body><img alt="gone" src="missing.png">'
                    '<script>console.error("boom"); undefinedFunction();</script></body></html>')
    browser.open(page)
    imgs = browser.evaluate(IMAGES_JS)
    assert imgs == [{"alt": "gone", "w": 0, "h": 0}]
    errs = browser.errors()
    assert any("boom" in e for e in errs) and any("undefinedFunction" in e for e in errs), errs


# --------------------------------------------------------------------- 2: snakemake --report
def _spemd_has_study() -> bool:
    spemd = shutil.which("spemd", path=ENV["PATH"])
    return spemd is not None and subprocess.run([spemd, "study", "--help"], capture_output=True, env=ENV).returncode == 0


#: Click Results > category > subcategory in the report app, then every result's "eye" button; return the
#: PNG figures the app displayed (by the filename in their data URI) with their decoded sizes.
SHOW_JS = r"""
(async (cat, sub) => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const click = txt => {
    const el = Array.from(document.querySelectorAll('#app a')).filter(x => x.innerText.trim() === txt).pop();
    if (el) { el.click(); }
    return !!el;
  };
  if (!(click('Results') && (await sleep(100), click(cat)) && (await sleep(100), click(sub)))) { return null; }
  await sleep(200);
  const shown = {};
  const n = document.querySelectorAll('#app a[iconname="eye"]').length;
  for (let i = 0; i < n; i++) {
    document.querySelectorAll('#app a[iconname="eye"]')[i].click();
    await sleep(250);
    for (const img of Array.from(document.images)) {
      if (!img.src.startsWith('data:image/png')) continue;
      if (!img.complete) { await new Promise(r => { img.onload = img.onerror = r; }); }
      const m = img.src.match(/filename=([^;,]+)/);
      shown[m ? m[1] : img.src.slice(0, 40)] = [img.naturalWidth, img.naturalHeight];
    }
  }
  return {eyes: n, shown: shown};
})
"""

EMBEDDED_HTML_JS = """
Object.entries(results).filter(([p, e]) => p.endsWith('comparison.html'))
  .map(([p, e]) => new TextDecoder().decode(Uint8Array.from(atob(e.data_uri.split(',')[1]), c => c.charCodeAt(0))))
"""


def _check_report(browser, report: Path, expected_pngs: set[str], exact=True):
    """Every PNG result is displayed by the report app and decodes; the comparison table is embedded."""
    browser.open(report)
    categories = browser.evaluate("categories")
    assert "Study across systems" in categories, categories
    shown, errors = {}, []
    for cat, subs in categories.items():
        for sub in subs:
            browser.open(report)
            r = browser.evaluate(f"({SHOW_JS})({json.dumps(cat)}, {json.dumps(sub)})")
            assert r is not None, f"report menu has no {cat} / {sub}"
            shown.update(r["shown"])
            errors += browser.errors()
            if r["shown"]:
                assert _not_blank(browser.screenshot())
    names = {Path(p).name for p in expected_pngs}
    assert set(shown) == names if exact else names <= set(shown), (sorted(shown), sorted(names))
    assert all(w > 100 and h > 100 for w, h in shown.values()), shown
    pages = browser.evaluate(EMBEDDED_HTML_JS)
    assert len(pages) == 1 and '<table id="comparison"' in pages[0]
    assert all(f'data-row-id="{i}"' in pages[0] for i in CLAIM_IDS)
    assert errors == []


def test_snakemake_report_of_the_study_rule(tmp_path, browser):
    if not _spemd_has_study():
        pytest.skip("`spemd study` is not available: add analysis.study.add_study_parser to pipeline/cli.py")
    work = tmp_path / "wf"
    shutil.copytree(ROOT / "config", work / "config")
    (work / "Snakefile").write_text(
        'configfile: "config/config.yaml"\n'
        f'include: "{ROOT / "rules" / "common.smk"}"\n'
        f'include: "{ROOT / "rules" / "report.smk"}"\n'
        "rule all:\n    input: rules.study.output\n    default_target: True\n")
    for name, wt, metal in (("PEO", 0, None), ("CPE", 40, "FeNi")):
        rec = transport_record(name, 0, 353.0, D_Na=2e-7 if wt else 1e-7, D_Na_sigma=1e-8, cn=3.0 if wt else 4.0)
        write_run(work, name, 0, 353.0, rec, wt=wt, metal=metal, density=[0.9] * 10 + [1.1] * 10)
        (work / "results" / name / "rep0" / "353K" / "md" / "equilibrate" / "done.json").write_text("{}")
    run = subprocess.run([str(BIN / "snakemake"), "--cores", "1"], cwd=work, env=ENV, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:] + (work / "logs" / "study.log").read_text()[-2000:]
    rep = subprocess.run([str(BIN / "snakemake"), "--report", "report.html"], cwd=work, env=ENV,
                         capture_output=True, text=True)
    assert rep.returncode == 0, rep.stderr[-3000:]
    pngs = {str(p.relative_to(work)) for p in (work / "results" / "study" / "figures").glob("*.png")}
    assert len(pngs) == 5  # one temperature: no Arrhenius figures
    _check_report(browser, work / "report.html", pngs)


def test_snakemake_report_of_a_finished_run(tmp_path, browser):
    run_dir = os.environ.get("SPEMD_FINISHED_RUN")
    if not run_dir:
        pytest.skip("set SPEMD_FINISHED_RUN to the directory of a finished `snakemake` run of this workflow "
                    "(the full workflow takes minutes; test_snakemake_report_of_the_study_rule covers the study)")
    run_dir = Path(run_dir)
    report = tmp_path / "report.html"
    rep = subprocess.run([str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), "--directory", str(run_dir),
                          "--report", str(report)], cwd=run_dir, env=ENV, capture_output=True, text=True)
    assert rep.returncode == 0, rep.stderr[-3000:]
    pngs = {str(p.relative_to(run_dir)) for p in (run_dir / "results" / "study" / "figures").glob("*.png")}
    _check_report(browser, report, pngs, exact=False)
