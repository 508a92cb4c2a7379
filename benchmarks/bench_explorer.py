"""Page weight and load time of the static explorers (gated_hmoe.viz.explorer.static_html).

Run by hand (not in CI), in two steps:

1. ``.venv/bin/python benchmarks/bench_explorer.py pages OUT`` -- builds chapter 07's
   attention-map explorer (the largest: 7 variants x 2 layers x 3 seeds = 42 distinct
   heat-map frames) from the cache (``e4.PRESETS["chapter"]``, as the chapter runs it) with
   each frame encoding below, writes one minimal page per encoding into ``OUT`` and prints
   bytes (raw and gzip -9, what a web server sends) and the render time.
2. ``PY -m ... load OUT [--chromium /usr/bin/chromium]`` with a Python that has Playwright
   (``pip install playwright``; no browser download needed with ``--chromium``): loads each
   page in headless Chromium ``--repeat`` times and prints the median time to the load
   event and the median time from a control change to the new frame decoded; from
   ``file://``, or with ``--mbps M`` from a local HTTP server (uncompressed) through
   Chromium's network emulation at M Mbit/s and 40 ms latency. It also checks that the change
   swapped the frame and that the page logged no errors. ``load`` also takes built book
   pages (``_build/html/chapters/*.html``; with ``--mbps``, ``--root _build/html``).

Encodings: the palette PNG of :func:`gated_hmoe.viz.explorer.palette_png` at several dpi
and palette sizes, the full-colour PNG, and matplotlib's SVG (each figure's own logic, the
same ``draw``: only the encoder differs).
"""
import argparse
import base64
import gzip
import io
import json
import statistics
import sys
import time
from pathlib import Path

PAGE = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>{name}</title></head>"
        "<body>{body}</body></html>")


def encoders():
    """name -> encode(figures) -> data URI (the library's palette PNG and alternatives)."""
    import matplotlib.pyplot as plt

    from gated_hmoe.viz import explorer as ex

    def png(dpi, colors):
        def encode(figs):
            data = ex.frame_png(figs, dpi=dpi, colors=colors)
            return "data:image/png;base64," + base64.b64encode(data).decode()
        return encode

    def svg(figs):
        buf = io.BytesIO()
        figs[0].savefig(buf, format="svg", facecolor="white", bbox_inches="tight")
        plt.close(figs[0])
        return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode()

    out = {f"png-palette{c}-dpi{d}": png(d, c) for d in (60, 80, 100) for c in (64, 128, 256)}
    out.update({"png-rgb-dpi80": png(80, None), "png-rgb-dpi100": png(100, None), "svg": svg})
    return out


def pages(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from gated_hmoe.experiments import e4_transformer as e4
    from gated_hmoe.viz import explorer as ex
    from gated_hmoe.viz import transformer as vt

    res = e4.run_experiment(e4.PRESETS["chapter"], progress=False)
    box = vt.maps_explorer(res)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, encode in encoders().items():
        t0 = time.perf_counter()
        frag = ex.static_html(box.controls, box.draw, encode=encode)
        secs = time.perf_counter() - t0
        page = PAGE.format(name=name, body=frag).encode()
        (out / f"{name}.html").write_bytes(page)
        rows.append({"encoding": name, "bytes": len(page),
                     "gzip_bytes": len(gzip.compress(page, 9)), "render_s": round(secs, 1)})
        print(json.dumps(rows[-1]), flush=True)
    (out / "sizes.json").write_text(json.dumps(rows, indent=1))


def serve(root: Path):
    """A local HTTP server for ``root`` in a thread; returns its base URL."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path == "/favicon.ico":        # the browser asks; not part of a page
                self.send_response(204)
                self.end_headers()
                return
            super().do_GET()

    handler = functools.partial(Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}/"


def load(paths: list[Path], chromium: str, repeat: int, mbps: float | None = None,
         root: Path | None = None) -> None:
    from playwright.sync_api import sync_playwright

    if mbps is not None:
        root = (root or paths[0].parent).resolve()
        base = serve(root)

    swap_js = """async () => {
      const root = document.querySelector('div.gh-explorer');
      const sel = root.querySelectorAll('select.gh-control');
      const img = root.querySelector('img.gh-frame');
      const s = sel[sel.length - 1];
      const before = img.getAttribute('data-key');
      const t0 = performance.now();
      s.value = String((Number(s.value) + 1) % s.options.length);
      s.dispatchEvent(new Event('change'));
      await img.decode();
      return [performance.now() - t0, before, img.getAttribute('data-key')];
    }"""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        for path in paths:
            loads, swaps, errors = [], [], []
            for _ in range(repeat):
                page = browser.new_page()
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("console", lambda m: errors.append(m.text) if m.type == "error"
                        else None)
                if mbps is None:
                    url = path.resolve().as_uri()
                else:
                    cdp = page.context.new_cdp_session(page)
                    cdp.send("Network.enable")
                    cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
                    cdp.send("Network.emulateNetworkConditions", {
                        "offline": False, "latency": 40,
                        "downloadThroughput": mbps * 1e6 / 8,
                        "uploadThroughput": mbps * 1e6 / 8})
                    url = base + path.resolve().relative_to(root).as_posix()
                page.goto(url, wait_until="load", timeout=120_000)
                nav = page.evaluate("() => { const n = performance.getEntriesByType("
                                    "'navigation')[0]; return n.loadEventStart; }")
                loads.append(nav)
                if page.query_selector("div.gh-explorer"):
                    ms, before, after = page.evaluate(swap_js)
                    assert before != after, (path, before, after)
                    swaps.append(ms)
                page.close()
            print(json.dumps({
                "page": path.name, "mbps": mbps, "bytes": path.stat().st_size,
                "explorers": path.read_text(errors="replace").count('class="gh-explorer"'),
                "load_ms_median": round(statistics.median(loads), 1),
                "swap_ms_median": round(statistics.median(swaps), 1) if swaps else None,
                "errors": sorted(set(errors))}), flush=True)
        browser.close()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("pages", help="write one page per frame encoding into OUT")
    sp.add_argument("out", type=Path)
    lp = sub.add_parser("load", help="load pages (files or folders of *.html) in Chromium")
    lp.add_argument("paths", type=Path, nargs="+")
    lp.add_argument("--chromium", default="/usr/bin/chromium")
    lp.add_argument("--repeat", type=int, default=5)
    lp.add_argument("--mbps", type=float, default=None,
                    help="serve over HTTP, throttled to this many Mbit/s (default: file://)")
    lp.add_argument("--root", type=Path, default=None,
                    help="with --mbps: the folder served (default: the first page's)")
    args = ap.parse_args(argv)
    if args.cmd == "pages":
        pages(args.out)
    else:
        files = [f for p in args.paths for f in (sorted(p.glob("*.html")) if p.is_dir() else [p])]
        load(files, args.chromium, args.repeat, args.mbps, args.root)


if __name__ == "__main__":
    sys.exit(main())
