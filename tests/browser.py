"""A headless browser for tests: the system's Chromium driven by Playwright, offline.

* The browser is Debian's ``chromium`` (``/usr/bin/chromium``), launched by Playwright's Python
  API with ``executable_path``: nothing is downloaded (never run ``playwright install``).
* WebGL runs on SwiftShader (``--use-gl=angle --use-angle=swiftshader``), so no GPU is needed.
* Pages come from :class:`Site`, a local HTTP server on 127.0.0.1 that serves named folders
  (``{"/files/": tmp_path, "/js/": TESTS_JS}``). Every request that does not go to that server
  is aborted and recorded in :attr:`Browser.blocked`, so a test can assert that a page asked
  for nothing outside the machine.

Usage::

    with Site({"/": folder}) as site, Browser() as browser:
        page = browser.open(site.url("/index.html"))
        page.wait_for("window.ready === true")
        value = page.evaluate("() => window.answer")
        pixels = page.screenshot("canvas")        # (H, W, 4) uint8, RGBA
        assert browser.blocked == []

:func:`missing` is the probe ``tests/system.py`` uses for ``@pytest.mark.system("chromium")``.
"""

from __future__ import annotations

import functools
import http.server
import io
import os
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np

TESTS_JS = Path(__file__).resolve().parent / "js"
#: Chromium flags: headless, WebGL on SwiftShader, and no background traffic to Google hosts.
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--use-gl=angle",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
)


def chromium_path() -> str | None:
    """The system's Chromium (the same search as tests/system.py's probes)."""
    from system import chromium_binary

    return chromium_binary()


@functools.cache
def missing() -> str | None:
    """None when Chromium starts here with WebGL 2 through Playwright, else why not (one line)."""
    if chromium_path() is None:
        return "no Chromium on PATH: apt-get install chromium"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Playwright Python package is missing: pip install playwright (do not run 'playwright install')"
    try:
        with Browser() as browser:
            page = browser.open("about:blank")
            renderer = page.evaluate("""() => {
                const gl = document.createElement('canvas').getContext('webgl2');
                if (!gl) return null;
                const ext = gl.getExtension('WEBGL_debug_renderer_info');
                return ext ? gl.getParameter(ext.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER);
            }""")
    except Exception as exc:  # Playwright raises its own error types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"Chromium does not start under Playwright ({first})"
    if not renderer:
        return "Chromium starts but has no WebGL 2 (SwiftShader missing from the chromium package?)"
    return None


class _Handler(http.server.SimpleHTTPRequestHandler):
    mounts: dict[str, Path] = {}

    def translate_path(self, path: str) -> str:
        path = unquote(urlsplit(path).path)
        for prefix in sorted(self.mounts, key=len, reverse=True):
            if path.startswith(prefix):
                root = self.mounts[prefix]
                rel = Path(path[len(prefix):].lstrip("/"))
                if ".." in rel.parts:
                    return str(root / "__forbidden__")
                return str(root / rel)
        return str(Path(os.devnull) / "__missing__")

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, *args) -> None:  # keep test output quiet
        pass


_Handler.extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript",
                           ".mjs": "text/javascript", ".glb": "model/gltf-binary", ".wasm": "application/wasm"}


class Site:
    """Serve folders over HTTP on 127.0.0.1 (an ephemeral port) in a background thread."""

    def __init__(self, mounts: dict[str, str | os.PathLike]):
        self.mounts = {("/" + k.strip("/") + "/").replace("//", "/"): Path(v) for k, v in mounts.items()}
        handler = type("Handler", (_Handler,), {"mounts": self.mounts})
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.origin = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return self.origin + "/" + path.lstrip("/")

    def __enter__(self) -> "Site":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


class Page:
    """A Playwright page with what tests need: wait for a JS condition, evaluate, screenshot."""

    def __init__(self, page, browser: "Browser"):
        self._page = page
        self.console: list[str] = []
        self.errors: list[str] = []
        page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    @property
    def raw(self):
        """The Playwright ``Page`` itself, for anything this wrapper does not cover."""
        return self._page

    def wait_for(self, condition: str, timeout_s: float = 60.0) -> None:
        """Wait until the JS expression ``condition`` is truthy; a timeout names the page's errors."""
        try:
            self._page.wait_for_function(condition, timeout=timeout_s * 1000)
        except Exception as exc:
            detail = "; ".join(self.errors[-3:] + [c for c in self.console if c.startswith("error")][-3:])
            raise AssertionError(f"page never met {condition!r} ({type(exc).__name__}); page errors: "
                                 f"{detail or 'none'}") from None

    def evaluate(self, script: str, arg=None):
        return self._page.evaluate(script, arg)

    def screenshot(self, selector: str | None = None, transparent: bool = True) -> np.ndarray:
        """(H, W, 4) uint8 RGBA of the element (or the page); ``transparent`` keeps alpha 0 where
        the page draws nothing."""
        from PIL import Image

        target = self._page.locator(selector) if selector else self._page
        png = target.screenshot(type="png", omit_background=transparent)
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


class Browser:
    """Headless Chromium; every request outside 127.0.0.1 (and ``about:``/``data:``) is aborted
    and listed in :attr:`blocked`; every request is listed in :attr:`requests`."""

    def __init__(self, viewport: tuple[int, int] = (512, 512), args: tuple[str, ...] = CHROMIUM_ARGS):
        self.viewport = viewport
        self.args = list(args)
        self.requests: list[str] = []
        self.blocked: list[str] = []
        self._pw = self._browser = self._context = None

    def __enter__(self) -> "Browser":
        from playwright.sync_api import sync_playwright

        path = chromium_path()
        if path is None:
            raise RuntimeError("no Chromium on PATH: apt-get install chromium")
        self._pw = sync_playwright().start()
        try:
            self._browser = self._pw.chromium.launch(executable_path=path, headless=True, args=self.args)
            self._context = self._browser.new_context(
                viewport={"width": self.viewport[0], "height": self.viewport[1]}, device_scale_factor=1,
                service_workers="block")
            self._context.route("**/*", self._route)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _route(self, route) -> None:
        url = route.request.url
        self.requests.append(url)
        host = urlsplit(url).hostname
        if url.startswith(("data:", "blob:", "about:")) or host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort("blockedbyclient")

    def open(self, url: str) -> Page:
        page = Page(self._context.new_page(), self)
        page.raw.goto(url)
        return page

    def __exit__(self, *exc) -> None:
        for closer in (self._context, self._browser):
            if closer is not None:
                try:
                    closer.close()
                except Exception:
                    pass
        if self._pw is not None:
            self._pw.stop()
        self._pw = self._browser = self._context = None
