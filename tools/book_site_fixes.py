"""A small Sphinx extension (loaded by _config.yml) that fixes two errors in the site's pages.

The browser test (tests/test_site.py) found both in every jupyter-book 1.0 site built with
these versions; neither is ours to fix upstream, so the book carries the fixes:

1. sphinx-thebe 0.3.1 adds its inline configuration (``const THEBE_JS_URL = ...``) each
   time Sphinx reads the sources, which is twice in a jupyter-book build, so every page
   declared the constant twice and threw "Identifier 'THEBE_JS_URL' has already been
   declared". Exact duplicate scripts are dropped from each page.
2. The Jupyter widget manager for static pages (``@jupyter-widgets/html-manager`` 1.x,
   for ipywidgets 8) typesets widget labels with MathJax 2's ``MathJax.Hub.Queue``. The
   site runs MathJax 3, which has no ``Hub``, so each label threw "Cannot read properties
   of undefined (reading 'Queue')". A few lines of JavaScript give MathJax 3 that one
   method, typesetting with its own ``typesetPromise``.
"""

from __future__ import annotations

MATHJAX_HUB_SHIM = """\
document.addEventListener("DOMContentLoaded", function () {
  var mj = window.MathJax;
  if (!mj || !mj.version || mj.Hub) { return; }
  mj.Hub = {
    Queue: function (job) {
      var element = Array.isArray(job) ? job[2] : undefined;
      var ready = (mj.startup && mj.startup.promise) || Promise.resolve();
      ready.then(function () { return mj.typesetPromise(element ? [element] : undefined); })
           .catch(function (err) { console.warn("MathJax could not typeset a widget label", err); });
    }
  };
});"""


def _drop_duplicate_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        # The same script can be registered with filename None and with "" (inline bodies).
        attributes = getattr(script, "attributes", {}) or {}
        key = (
            str(getattr(script, "filename", script) or ""),
            tuple(sorted((str(k), str(v)) for k, v in attributes.items())),
        )
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def setup(app):
    # Before the widget manager's scripts, so its DOMContentLoaded handler runs first.
    app.add_js_file(None, body=MATHJAX_HUB_SHIM, priority=200)
    # Early: Sphinx stops calling html-page-context handlers at the first that returns a
    # value (some themes do), and the duplicates are there before any handler runs.
    app.connect("html-page-context", _drop_duplicate_scripts, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
