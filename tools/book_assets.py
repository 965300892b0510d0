"""Bring the book's browser-side libraries from the npm registry, so the site needs no CDN.

A Sphinx site loads MathJax (the formulas) and, on pages with Jupyter widgets, RequireJS
and the widget manager from CDNs. In a classroom without internet the formulas would
then show as raw TeX. This script fetches pinned releases of those three packages with
npm's own client (``npm pack``; npm's cache makes a second run work offline), checks
each tarball against the sha512 pinned below, and unpacks the files the site needs
under ``_build/assets/_static/vendor/npm/NAME/`` (laid out as in the package).
``_config.yml`` hands ``_build/assets`` to Sphinx (``html_extra_path``), so the files land
in ``_build/html/_static/vendor/`` and the pages load them from there (``mathjax_path``,
``nb_ipywidgets_js``). ``vendor/require-config.js``, loaded before RequireJS on pages with
widgets, tells RequireJS where the widget manager lives, so that its fonts and icons load
from the site too rather than from the page's folder.

Nothing here is committed: the book command runs this before every build.

Usage: python tools/book_assets.py   (from the repository root; needs npm)
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "_build" / "assets" / "_static" / "vendor"
DEST = VENDOR / "npm"


@dataclass(frozen=True)
class Package:
    """A pinned npm package and the files of it the site serves."""

    spec: str  # name@version for npm pack
    integrity: str  # the registry's sha512 of the tarball (npm view NAME@VERSION dist.integrity)
    keep: tuple[str, ...]  # path prefixes inside the package to copy (relative to its root)
    drop: tuple[str, ...] = ()  # path suffixes or prefixes left out (source maps, unused builds)


PACKAGES = (
    # MathJax 3, the version Sphinx 7 loads from its CDN; the TeX + MathML -> HTML/CSS
    # component, and the folders it loads extensions, fonts and the menu from on demand.
    Package(
        spec="mathjax@3.2.2",
        integrity="sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
        keep=(
            "LICENSE",
            "es5/tex-mml-chtml.js",
            "es5/input/",
            "es5/output/chtml.js",
            "es5/output/chtml/",
            "es5/a11y/",
            "es5/ui/",
            "es5/sre/",
            "es5/adaptors/",
        ),
    ),
    # RequireJS, which the widget manager needs (myst-nb loads 2.3.4 from a CDN).
    Package(
        spec="requirejs@2.3.8",
        integrity="sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw==",
        keep=("require.js", "LICENSE"),
    ),
    # The Jupyter widget manager for static pages, matching ipywidgets 8 (myst-nb loads
    # 1.0.x from a CDN). Its fonts and icons sit beside embed-amd.js.
    Package(
        spec="@jupyter-widgets/html-manager@1.0.15",
        integrity="sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
        keep=("dist/", "LICENSE"),
        drop=(".map", "dist/embed.js", "dist/libembed-amd.js"),
    ),
)


def sha512_integrity(path: Path) -> str:
    """The tarball's digest in npm's Subresource Integrity format (sha512-<base64>)."""
    digest = hashlib.sha512(path.read_bytes()).digest()
    return "sha512-" + base64.b64encode(digest).decode()


def npm_pack(spec: str, into: Path) -> Path:
    """Fetch a package's tarball with npm (from its cache when it has it)."""
    npm = shutil.which("npm")
    if npm is None:
        sys.exit(
            "book_assets: npm is needed to fetch MathJax and the widget manager for the site "
            "(install Node.js and npm, e.g. `apt-get install npm`)"
        )
    out = subprocess.run(
        [npm, "pack", spec, "--prefer-offline", "--silent", "--pack-destination", str(into)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        sys.exit(f"book_assets: `npm pack {spec}` failed:\n{out.stderr.strip()}")
    name = out.stdout.strip().splitlines()[-1]
    return into / name


def unpack(package: Package, tarball: Path, dest: Path) -> int:
    """Copy the package's kept files into dest; return how many."""
    count = 0
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            rel = member.name.split("/", 1)[1]  # npm tarballs hold everything under package/
            if not rel.startswith(package.keep) or any(
                rel.endswith(d) or rel.startswith(d) for d in package.drop
            ):
                continue
            target = dest / rel
            if ".." in Path(rel).parts:
                raise ValueError(f"{package.spec}: unsafe path {member.name!r} in the tarball")
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            count += 1
    return count


REQUIRE_CONFIG = """\
// Loaded just before RequireJS on pages with Jupyter widgets (see _config.yml): the widget
// manager finds its fonts and icons relative to RequireJS's base URL, so point that at the
// site's copy of the npm packages rather than at the page's own folder.
var require = { baseUrl: new URL("npm/", document.currentScript.src).href };
"""


def main() -> int:
    if VENDOR.exists():
        shutil.rmtree(VENDOR)
    with tempfile.TemporaryDirectory() as tmp:
        for package in PACKAGES:
            tarball = npm_pack(package.spec, Path(tmp))
            got = sha512_integrity(tarball)
            if got != package.integrity:
                sys.exit(
                    f"book_assets: {package.spec} does not match its pinned sha512\n"
                    f"  expected {package.integrity}\n  got      {got}"
                )
            folder = DEST / package.spec.rsplit("@", 1)[0]
            n = unpack(package, tarball, folder)
            print(
                f"book_assets: {package.spec} (sha512 ok): {n} files -> {folder.relative_to(ROOT)}"
            )
    (VENDOR / "require-config.js").write_text(REQUIRE_CONFIG)
    return 0


if __name__ == "__main__":
    sys.exit(main())
