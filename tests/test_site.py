"""The published book: the strict build, then the site as a reader sees it, in headless Chromium.

The module's fixture runs the book command itself (``make html``, the body of ``make book``:
a clean ``_build``, MathJax and the widget manager from npm, every chapter and solutions
notebook executed, ``jupyter-book build -W -n --keep-going``). Those executions are the
notebook checks of ``make test``: each notebook runs once per test run, here, and
``test_notebook_executes`` reports each one (with its traceback when a cell fails).

Then the site in ``_build/html`` is served on 127.0.0.1 and every page of ``_toc.yml`` is
opened in Debian's Chromium (driven by Playwright; nothing is downloaded: requests that
leave the machine are blocked and recorded, and a test asserts there were none). The
checks: no console errors, executed outputs and figures on the chapter pages, rendered
formulas, internal links that resolve, the Colab launch link of every notebook page, and
the search page. Screenshots go to ``_build/screenshots/``.

Pages come from ``_toc.yml``, so the tests grow with the book. Without Chromium the
browser tests skip (``.ci/run`` installs it: ``apt-get install chromium``); the build
and notebook tests still run. To check an existing ``_build/html`` without rebuilding
(after ``make book``), set ``LLMBOOK_REUSE_BUILD=1``.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from html import escape
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
HTML = BUILD / "html"
SCREENSHOTS = BUILD / "screenshots"
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())


def _tools():
    spec = importlib.util.spec_from_file_location(
        "execute_notebooks", ROOT / "tools" / "execute_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXECUTE = _tools()
PAGES = EXECUTE.toc_entries(TOC)  # every page of the book, root first, in toc order
NOTEBOOK_PAGES = [p for p in PAGES if (ROOT / f"{p}.ipynb").is_file()]
CHAPTERS = [p for p in NOTEBOOK_PAGES if p.startswith("chapters/")]
EXECUTED = [str(p.relative_to(ROOT).with_suffix("")) for p in EXECUTE.notebooks_to_execute(ROOT)]


def colab_address(page: str) -> str:
    """Where the launch menu must send a reader: Colab's GitHub view of the notebook on main."""
    repo = urlsplit(CONFIG["repository"]["url"]).path.strip("/")
    branch = CONFIG["repository"].get("branch", "main")
    book = CONFIG["repository"].get("path_to_book", "").strip("/")
    path = "/".join(x for x in (book, f"{page}.ipynb") if x)
    return f"{CONFIG['launch_buttons']['colab_url']}/github/{repo}/blob/{branch}/{path}"


# --------------------------------------------------------------------------------------
# The strict build (runs once per test session, on whichever worker gets this file)


class Site:
    def __init__(self, returncode: int, log: str, seconds: float | None):
        self.returncode, self.log, self.seconds = returncode, log, seconds
        report = BUILD / "execution.json"
        self.execution = json.loads(report.read_text()) if report.is_file() else None

    def tail(self, n: int = 60) -> str:
        lines = self.log.splitlines()
        problems = [ln for ln in lines if re.search(r"WARNING|ERROR|Error|FAILED", ln)]
        return "\n".join(["... problems:", *problems[-40:], "... last lines:", *lines[-n:]])


@pytest.fixture(scope="module")
def site() -> Site:
    if os.environ.get("LLMBOOK_REUSE_BUILD") == "1" and (HTML / "index.html").is_file():
        log = BUILD / "book.log"
        return Site(0, log.read_text() if log.is_file() else "", None)
    make = shutil.which("make")
    if make is None:
        pytest.fail("make is needed to run the book command (make html)")
    started = time.perf_counter()
    out = subprocess.run(
        [make, "--no-print-directory", "html", f"BIN={Path(sys.executable).parent}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        # Not a sub-make of `make test`: its flags and jobserver do not apply here.
        env={k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")},
    )
    seconds = time.perf_counter() - started
    log = out.stdout + out.stderr + f"\n[make html: exit {out.returncode}, {seconds:.0f} s]\n"
    BUILD.mkdir(exist_ok=True)
    (BUILD / "book.log").write_text(log)
    return Site(out.returncode, log, seconds)


@pytest.mark.parametrize("notebook", EXECUTED)
def test_notebook_executes(site, notebook):
    """Every chapter and solutions notebook runs top to bottom (its asserts are the checks)."""
    if site.execution is None:
        pytest.fail(f"the book command stopped before executing notebooks:\n{site.tail()}")
    records = {r["path"]: r for r in site.execution["notebooks"]}
    record = records.get(f"{notebook}.ipynb")
    assert record is not None, f"{notebook}.ipynb was not executed by tools/execute_notebooks.py"
    assert record["ok"], f"{notebook}.ipynb failed:\n{record['error']}"


def test_strict_build_passes(site):
    """`make book` from a clean _build: warnings are errors, nitpicky references, all pages."""
    assert site.returncode == 0, f"the book command failed (exit {site.returncode}):\n{site.tail()}"
    for page in PAGES:
        assert (HTML / f"{page}.html").is_file(), (
            f"_toc.yml lists {page}, but the site has no {page}.html"
        )
    assert (HTML / "index.html").is_file() and (HTML / "search.html").is_file()
    # The parts of _toc.yml are the sections of every page's navigation.
    captions = re.findall(
        r'<span class="caption-text">(.*?)</span>', (HTML / f"{PAGES[0]}.html").read_text()
    )
    for part in TOC.get("parts", []):
        assert escape(part["caption"], quote=False) in captions, (
            f"no part {part['caption']!r} in the navigation"
        )


def test_exercises_are_shown_not_executed_and_solutions_are_executed(site):
    """Exercises raise until solved, so the build shows them without running them."""
    if site.returncode != 0:
        pytest.skip("the build failed; see test_strict_build_passes")
    for page in NOTEBOOK_PAGES:
        html = (HTML / f"{page}.html").read_text()
        outputs = html.count('class="cell_output')
        if page.startswith("exercises/"):
            assert page not in EXECUTED and outputs == 0, f"{page} should be shown, not executed"
            assert "NotImplementedError" in html, f"{page} should show its unsolved exercise cells"
        elif page.startswith(("chapters/", "solutions/")):
            assert page in EXECUTED and outputs > 0, f"{page} shows no executed outputs"


def _outputs(html: str) -> list[str]:
    """The HTML of each executed output on a page (from one output to the next cell)."""
    parts = html.split('class="cell_output')[1:]
    return [re.split(r'class="cell(?: |_input)', part, maxsplit=1)[0] for part in parts]


def test_outputs_show_no_machine_paths(site):
    """A reader's page shows no folder of the machine that built it (home, cache, temp)."""
    if site.returncode != 0:
        pytest.skip("the build failed; see test_strict_build_passes")
    machine = {str(Path.home()), str(ROOT), "/tmp/", os.environ.get("LLMBOOK_DATA") or str(ROOT)}
    found = []
    for page in NOTEBOOK_PAGES:
        if not page.startswith(("chapters/", "solutions/")):
            continue
        for output in _outputs((HTML / f"{page}.html").read_text()):
            text = re.sub(r"<[^>]+>", "", output)
            found += [f"{page}: {path!r}" for path in machine if path in text]
    assert not found, f"outputs name folders of the build machine: {sorted(set(found))}"


def test_math_is_served_from_the_site_not_a_cdn(site):
    if site.returncode != 0:
        pytest.skip("the build failed; see test_strict_build_passes")
    vendor = HTML / "_static" / "vendor"
    assert (vendor / "npm" / "mathjax" / "es5" / "tex-mml-chtml.js").is_file(), (
        "no MathJax in the site"
    )
    assert (
        vendor / "npm" / "@jupyter-widgets" / "html-manager" / "dist" / "embed-amd.js"
    ).is_file()
    for page in PAGES:
        html = (HTML / f"{page}.html").read_text()
        for src in re.findall(r'<script[^>]+src="([^"]+)"', html):
            assert not src.startswith(("http:", "https:", "//")), (
                f"{page} loads a script from {src}"
            )


# --------------------------------------------------------------------------------------
# The site in a real browser


def find_chromium() -> str | None:
    for name in (os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser"):
        if name and (path := shutil.which(name)):
            return path
    return None


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the test reports what matters itself
        pass


@pytest.fixture(scope="module")
def server(site):
    if not (HTML / "index.html").is_file():
        pytest.fail(f"the build made no site to test:\n{site.tail()}")
    handler = functools.partial(QuietHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    chromium = find_chromium()
    if chromium is None:
        pytest.skip(
            "Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)"
        )
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        yield b
        b.close()


class Visit:
    """What a reader's browser met on one page."""

    def __init__(self):
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        self.external_requests: list[str] = []
        self.bad_responses: list[str] = []
        self.links: list[str] = []
        self.colab_links: list[str] = []
        self.facts: dict = {
            "h1": "",
            "code_cells": 0,
            "outputs": 0,
            "text_outputs": 0,
            "figures": 0,
            "figures_loaded": 0,
            "math_elements": 0,
            "math_rendered": 0,
            "math_errors": [],
            "widget_views": 0,
            "code_overflow": 0,
            "output_overflow": [],
            "widgets_rendered": 0,
            "launch_menu": [],
        }


def open_page(browser, url: str, visit: Visit, origin: str, viewport=(1280, 900)):
    """A fresh page that blocks and records every request leaving 127.0.0.1."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})

    def route(r):
        if r.request.url.startswith(origin) or r.request.url.startswith("data:"):
            r.continue_()
        else:
            visit.external_requests.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on(
        "console",
        lambda m: m.type == "error" and visit.console_errors.append(f"{m.text} @ {m.location}"),
    )
    page.on("pageerror", lambda e: visit.page_errors.append(str(e)))
    page.on(
        "response",
        lambda r: (
            r.status >= 400
            and r.url.startswith(origin)
            and visit.bad_responses.append(f"{r.status} {r.url}")
        ),
    )
    page.goto(url, wait_until="load")
    page.wait_for_load_state("networkidle")
    return context, page


READY = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  return true;
}"""

FACTS = """() => {
  const q = (s) => Array.from(document.querySelectorAll(s));
  const article = document.querySelector('article') || document.body;
  const imgs = Array.from(article.querySelectorAll('.cell_output img'));
  return {
    title: document.title,
    h1: (article.querySelector('h1') || {}).textContent || '',
    code_cells: q('div.cell').length,
    outputs: q('div.cell_output').length,
    text_outputs: q('div.cell_output .output pre, div.cell_output pre').filter(e => e.textContent.trim()).length,
    figures: imgs.length,
    figures_loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    math_elements: q('.math').length,
    math_rendered: q('.math mjx-container').length,
    math_errors: q('mjx-merror').map(e => e.getAttribute('data-mjx-error') || e.textContent).slice(0, 5),
    code_overflow: q('div.cell_input pre').filter(e => e.scrollWidth > e.clientWidth + 1).length,
    output_overflow: q('div.cell_output pre').filter(e => e.scrollWidth > e.clientWidth + 1)
      .map(e => e.textContent.split('\\n').reduce((a, l) => l.length > a.length ? l : a, '').slice(0, 80)),
    widget_views: q('script[type="application/vnd.jupyter.widget-view+json"]').length,
    widgets_rendered: q('.jupyter-widgets').length,
    launch_menu: q('.dropdown-launch-buttons a').map(a => a.href),
    links: q('a[href]').map(a => a.href),
  };
}"""


@pytest.fixture(scope="module")
def visits(browser, server):
    """Open every page of the toc once and record what happened (the tests below judge it)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    found = {}
    for page_name in PAGES:
        visit = Visit()
        context = None
        try:
            context, page = open_page(browser, f"{server}/{page_name}.html", visit, server)
            page.evaluate(READY)
            if page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count():
                page.wait_for_selector(".jupyter-widgets", timeout=15_000, state="attached")
            page.wait_for_load_state("networkidle")
            visit.facts = page.evaluate(FACTS)
            visit.links = visit.facts.pop("links")
            visit.colab_links = [u for u in visit.facts["launch_menu"] if "colab" in u]
            if page_name == PAGES[0]:
                page.screenshot(path=str(SCREENSHOTS / "landing.png"))
            if CHAPTERS and page_name == CHAPTERS[0]:
                page.screenshot(path=str(SCREENSHOTS / "chapter.png"))
                figure = page.locator("div.cell_output img").first
                if figure.count():
                    figure.scroll_into_view_if_needed()
                    page.wait_for_timeout(200)
                    page.screenshot(path=str(SCREENSHOTS / "chapter-figure.png"))
                formula = page.locator("mjx-container").first
                if formula.count():
                    formula.scroll_into_view_if_needed()
                    page.screenshot(path=str(SCREENSHOTS / "chapter-math.png"))
        except Exception as err:
            visit.page_errors.append(f"the page did not finish loading: {err}")
        finally:
            if context is not None:
                context.close()
        found[page_name] = visit
    return found


@pytest.mark.parametrize("page", PAGES)
def test_page_loads_without_errors_or_outside_requests(visits, page):
    v = visits[page]
    assert not v.page_errors, f"{page}: uncaught JavaScript errors: {v.page_errors}"
    assert not v.console_errors, f"{page}: console errors: {v.console_errors}"
    assert not v.bad_responses, (
        f"{page}: requests that failed on the local server: {v.bad_responses}"
    )
    assert not v.external_requests, (
        f"{page}: the page asked for files outside the site (it must work offline): {v.external_requests}"
    )


@pytest.mark.parametrize("page", PAGES)
def test_formulas_render_and_widgets_load(visits, page):
    f = visits[page].facts
    assert f["math_rendered"] == f["math_elements"], (
        f"{page}: {f['math_elements'] - f['math_rendered']} of {f['math_elements']} formulas were not "
        "typeset by MathJax"
    )
    assert not f["math_errors"], f"{page}: MathJax could not typeset: {f['math_errors']}"
    if f["widget_views"]:
        assert f["widgets_rendered"], f"{page}: has {f['widget_views']} widgets, but none rendered"


def test_the_book_has_formulas_and_they_render(visits):
    """At least one page typesets mathematics (with MathJax from the site itself)."""
    rendered = {p: v.facts["math_rendered"] for p, v in visits.items() if v.facts["math_rendered"]}
    assert rendered, "no page of the book shows a rendered formula"


@pytest.mark.parametrize("page", CHAPTERS)
def test_chapter_shows_its_executed_outputs_and_figures(visits, page):
    f = visits[page].facts
    assert f["code_cells"] > 0, f"{page}: no code cells on the page"
    assert f["outputs"] >= f["code_cells"] // 3, (
        f"{page}: only {f['outputs']} outputs for {f['code_cells']} cells"
    )
    assert f["text_outputs"] > 0, f"{page}: no printed output"
    assert f["figures"] > 0, f"{page}: no figures"
    assert f["figures_loaded"] == f["figures"], (
        f"{page}: {f['figures'] - f['figures_loaded']} figures did not load"
    )


@pytest.mark.parametrize("page", NOTEBOOK_PAGES)
def test_code_cells_fit_the_page_without_a_scroll_bar(visits, page):
    """At 1280 px, with both sidebars shown, an 88-character code line fits its box."""
    overflowing = visits[page].facts["code_overflow"]
    assert overflowing == 0, (
        f"{page}: {overflowing} code cells scroll sideways; the code font in _static/custom.css "
        "must fit 88 characters in the article column"
    )


@pytest.mark.parametrize("page", NOTEBOOK_PAGES)
def test_printed_output_wraps_instead_of_scrolling(visits, page):
    """A long printed line (token ids, a message) wraps at the column's edge (custom.css)."""
    overflowing = visits[page].facts["output_overflow"]
    assert not overflowing, (
        f"{page}: {len(overflowing)} outputs scroll sideways; div.cell_output pre in "
        "_static/custom.css should wrap (white-space: pre-wrap). Their longest lines:\n"
        + "\n".join(overflowing)
    )


@pytest.mark.parametrize("page", NOTEBOOK_PAGES)
def test_launch_menu_opens_the_notebook_in_colab(visits, page):
    links = visits[page].colab_links
    assert links, f"{page}: the launch menu has no Colab link"
    assert set(links) == {colab_address(page)}, (
        f"{page}: Colab links {links}, expected {colab_address(page)}"
    )
    assert (ROOT / f"{page}.ipynb").is_file()


def test_internal_links_resolve(visits, server):
    """Every link from a page of the book to the site itself reaches a file, and its #anchor an id."""
    broken = []
    ids: dict[Path, set[str]] = {}
    for page, visit in visits.items():
        for href in set(visit.links):
            if not href.startswith(server):
                continue
            parts = urlsplit(href)
            target = HTML / unquote(parts.path).lstrip("/")
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append(f"{page} -> {href}")
                continue
            if parts.fragment and target.suffix == ".html":
                if target not in ids:
                    ids[target] = set(re.findall(r'\bid="([^"]+)"', target.read_text()))
                if unquote(parts.fragment) not in ids[target]:
                    broken.append(f"{page} -> {href} (no such anchor)")
    assert not broken, "broken internal links:\n" + "\n".join(sorted(broken))


def search_word(page: str) -> str:
    """A word from the chapter's title that the search must find (the longest one)."""
    title = (HTML / f"{page}.html").read_text()
    h1 = re.search(r"<h1[^>]*>(.*?)</h1>", title, re.DOTALL)
    words = re.findall(r"[A-Za-z]{5,}", re.sub(r"<[^>]+>", " ", h1.group(1) if h1 else ""))
    return max(words, key=len).lower() if words else "attention"


@pytest.mark.skipif(not CHAPTERS, reason="no chapters in the toc")
def test_search_finds_a_word_from_a_chapter(browser, server, visits):
    page_name = CHAPTERS[-1]
    word = search_word(page_name)
    visit = Visit()
    context, page = open_page(browser, f"{server}/search.html?q={word}", visit, server)
    try:
        # Sphinx lists the results one by one, then writes a summary: wait for the summary.
        page.wait_for_function(
            "() => { const s = document.querySelector('#search-results .search-summary');"
            " return s && s.innerText.trim().length > 0; }",
            timeout=30_000,
        )
        results = page.eval_on_selector_all(
            "#search-results ul.search li > a", "els => els.map(e => e.href)"
        )
        page.screenshot(path=str(SCREENSHOTS / "search.png"))
    finally:
        context.close()
    assert any(f"/{page_name}.html" in r for r in results), (
        f"searching {word!r} did not find {page_name}: {results}"
    )
    assert not visit.page_errors and not visit.console_errors, (
        visit.page_errors,
        visit.console_errors,
    )
    assert not visit.external_requests, visit.external_requests


def test_screenshots_were_written(visits):
    assert (SCREENSHOTS / "landing.png").is_file()
    if CHAPTERS:
        assert (SCREENSHOTS / "chapter.png").is_file() and (
            SCREENSHOTS / "chapter-figure.png"
        ).is_file()
