"""Colab, simulated: a chapter's set-up cell installs the library, and the chapter then runs.

A reader who opens a chapter in Colab gets a machine with Python, Jupyter and torch
already installed, and nothing of this course. The chapter's first cell installs
``llmbook`` from the repository when ``google.colab`` is imported, and does nothing
anywhere else. This test plays that out on this machine:

1. a fresh virtual environment (``python -m venv``) with only what Colab is sure to
   have and the course needs most: torch (pinned by constraints.txt, the CPU build) and
   ipykernel;
2. a kernel from that environment runs the set-up cell as it is: outside Colab it must
   print nothing and install nothing;
3. a stand-in ``google.colab`` module is put in ``sys.modules`` and the set-up cell runs
   again, with its ``git+https://github.com/...`` address pointed at a copy of this
   checkout's package source: pip installs ``llmbook`` and whatever it declares that the
   environment lacks (``PIP_CONSTRAINT`` keeps the versions to constraints.txt);
4. the chapter's next cells run in that kernel: the imports and the first uses of data
   prove that the installed package is complete (modules, dependencies, data lookup).

The installs go through pip's cache, so after the first run the test takes about a
minute. It needs PyPI (or pip's cache) but no other network: the data come from
``LLMBOOK_DATA`` as in every other test.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import textwrap
import time
import venv
from pathlib import Path

import pytest
import yaml

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
TransformerManager = pytest.importorskip("IPython.core.inputtransformer2").TransformerManager

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
REPO = CONFIG["repository"]["url"]
# How many code cells of the chapter run after the set-up cell: imports and first uses of data.
NEXT_CELLS = 5


def first_chapter() -> Path:
    def files(node):
        if isinstance(node, dict):
            if "file" in node:
                yield node["file"]
            for value in node.values():
                yield from files(value)
        elif isinstance(node, list):
            for item in node:
                yield from files(item)

    chapters = [
        f for f in files(TOC) if f.startswith("chapters/") and (ROOT / f"{f}.ipynb").is_file()
    ]
    if not chapters:
        pytest.skip("no chapter in _toc.yml")
    return ROOT / f"{chapters[0]}.ipynb"


def package_source(dest: Path) -> Path:
    """What `pip install git+<repository>` would build from: the package's files in this checkout."""
    src = dest / "llmbook-src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "lib",
        src / "lib",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"),
    )
    return src


def code(source: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(source)


FAKE_COLAB = """\
import sys, types
google = types.ModuleType("google")
google.colab = types.ModuleType("google.colab")
sys.modules["google"], sys.modules["google.colab"] = google, google.colab
"""

WHERE_IS_LLMBOOK = """\
import importlib, importlib.util
importlib.invalidate_caches()
spec = importlib.util.find_spec("llmbook")
print("llmbook:", spec.origin if spec else None)
"""


def printed(cell) -> str:
    return "".join(
        o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream"
    )


# What Colab has installed before a notebook's first cell runs, and the course needs: torch
# and the Jupyter kernel. The simulation shares them, read-only, from this environment.
PREINSTALLED = ("torch", "ipykernel")


def closure(names) -> dict:
    """The installed distributions these names need, themselves included."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found, todo = {}, list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        try:
            found[name] = dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


def system_site_packages(folder: Path) -> Path:
    """A folder of links to PREINSTALLED (and what they need): Colab's system packages."""
    folder.mkdir()
    for dist in closure(PREINSTALLED).values():
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] != ".."}:
            target = Path(dist.locate_file(top))
            if target.exists() and not (folder / top).exists():
                (folder / top).symlink_to(target)
    return folder


@pytest.fixture(scope="module")
def colab_env(tmp_path_factory):
    """A fresh venv that sees Colab's preinstalled packages (torch, ipykernel), and nothing else."""
    home = tmp_path_factory.mktemp("colab")
    env_dir = home / "venv"
    started = time.perf_counter()
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    system = system_site_packages(home / "system-site-packages")
    # Like a system site folder: after the environment's own, and pip leaves it alone.
    (Path(site) / "colab-system.pth").write_text(f"{system}\n")
    kernels = home / "kernels" / "colab-sim"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Colab simulation",
                "language": "python",
            }
        )
    )
    return {
        "home": home,
        "python": python,
        "kernels": kernels.parent,
        "seconds": time.perf_counter() - started,
    }


def test_set_up_cell_installs_the_library_in_colab_only_and_the_chapter_runs(
    colab_env, monkeypatch
):
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    chapter = first_chapter()
    nb = nbformat.read(chapter, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    setup = cells[0].source
    address = f"git+{REPO}"
    assert address in setup, f"{chapter.name}: the set-up cell does not install from {address}"
    local = package_source(colab_env["home"]).as_uri()
    colab_setup = setup.replace(address, local)

    run = [
        code(WHERE_IS_LLMBOOK),  # 0: a fresh environment has no llmbook
        code(setup),  # 1: outside Colab the set-up cell does nothing
        code(WHERE_IS_LLMBOOK),  # 2: still no llmbook
        code(FAKE_COLAB),  # 3: now "in Colab"
        code(colab_setup),  # 4: the set-up cell installs llmbook
        code(WHERE_IS_LLMBOOK + "import llmbook\nprint('version', llmbook.__version__)\n"),  # 5
        *[code(c.source) for c in cells[1 : 1 + NEXT_CELLS]],  # the chapter goes on
    ]
    sim = nbformat.v4.new_notebook(cells=run, metadata=nb.metadata)

    # The kernel's environment: Colab's (no course variables but the data folder), with
    # pip held to the pinned versions and the figures drawn off-screen.
    monkeypatch.setenv("PIP_CONSTRAINT", str(ROOT / "constraints.txt"))
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    km = KernelManager(
        kernel_name="colab-sim",
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(colab_env["kernels"])]),
    )
    client = nbclient.NotebookClient(
        sim,
        km=km,
        timeout=600,
        allow_errors=False,
        resources={"metadata": {"path": str(chapter.parent)}},
    )
    started = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"a cell failed in the simulated Colab:\n{err}")
    seconds = time.perf_counter() - started

    venv_dir = str(colab_env["python"].parent.parent)
    assert printed(sim.cells[0]).strip() == "llmbook: None", printed(sim.cells[0])
    assert sim.cells[1].outputs == [], (
        f"outside Colab the set-up cell must do nothing: {sim.cells[1].outputs}"
    )
    assert printed(sim.cells[2]).strip() == "llmbook: None", (
        "the set-up cell installed llmbook outside Colab"
    )
    where = printed(sim.cells[5])
    assert venv_dir in where and "site-packages" in where, (
        f"in Colab the set-up cell must install llmbook into the environment: {where}"
    )
    print(
        f"Colab simulation: fresh venv {colab_env['seconds']:.0f} s, set-up cell and "
        f"{NEXT_CELLS} cells of {chapter.name} {seconds:.0f} s"
    )


# Calls that read a file named by their first argument.
FILE_READERS = {
    "open",
    "Path",
    "PurePath",
    "read_csv",
    "read_json",
    "read_table",
    "read_parquet",
    "read_excel",
    "load",
    "loadtxt",
    "genfromtxt",
    "fromfile",
    "imread",
    "load_file",
    "safe_open",
}
MAGICS = ("%cd", "%run", "%load", "%%writefile", "!cat", "!ls", "!wget", "!curl")


def relative_path_reads(source: str) -> list[str]:
    """What a code cell does that depends on the working folder (empty when nothing)."""
    found = [f"magic: {line.strip()}" for line in source.splitlines() if line.lstrip().startswith(MAGICS)]
    # IPython turns magics and shell lines (with their backslash continuations) into Python
    # calls, as the kernel does before it runs the cell.
    python = TransformerManager().transform_cell(source)
    try:
        tree = ast.parse(textwrap.dedent(python))
    except SyntaxError as err:
        return [f"does not parse as Python: {err}"]
    for node in ast.walk(tree):
        is_text = isinstance(node, ast.Constant) and isinstance(node.value, str)
        if is_text and node.value.startswith(("../", "./")) and "\n" not in node.value:
            found.append(f"relative path {node.value!r}")
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        name = (
            func.id
            if isinstance(func, ast.Name)
            else func.attr
            if isinstance(func, ast.Attribute)
            else ""
        )
        if name == "chdir":
            found.append("os.chdir")
        first = node.args[0]
        literal = (
            first.value
            if isinstance(first, ast.Constant) and isinstance(first.value, str)
            else first.values[0].value
            if isinstance(first, ast.JoinedStr)
            and first.values
            and isinstance(first.values[0], ast.Constant)
            else None
        )
        if name in FILE_READERS and literal is not None and not literal.startswith(("/", "~")):
            found.append(f"{name}({literal!r}) reads a file relative to the working folder")
    return found


def test_relative_path_reads_are_recognised():
    assert relative_path_reads('text = open("data/input.txt").read()')
    assert relative_path_reads('df = pd.read_csv("../data/spam.csv")')
    assert relative_path_reads('w = torch.load(f"checkpoints/{name}.pt")')
    assert relative_path_reads("%cd ..")
    assert relative_path_reads('p = "../shared/data/text/x.txt"')
    assert relative_path_reads("os.chdir(folder)")
    assert not relative_path_reads('text = load_corpus("shakespeare")')
    assert not relative_path_reads('path = data_path("text/shakespeare.txt")')
    assert not relative_path_reads('with open(os.devnull, "w") as devnull:\n    pass')
    assert not relative_path_reads('%pip install -q "llmbook @ git+https://example.org/x"')


def test_notebooks_read_data_only_through_the_library():
    """No notebook opens a file by a relative path: in Colab only the library's data lookup works."""
    offences = []
    for folder in ("chapters", "solutions", "exercises"):
        for path in sorted((ROOT / folder).glob("*.ipynb")):
            nb = json.loads(path.read_text())
            for i, cell in enumerate(nb["cells"]):
                if cell["cell_type"] == "code":
                    offences += [
                        f"{path.relative_to(ROOT)} cell {i}: {o}"
                        for o in relative_path_reads("".join(cell["source"]))
                    ]
    assert not offences, (
        "notebooks read data through llmbook.data (data_path, read_text, load_corpus), "
        "never by a path relative to the notebook:\n" + "\n".join(offences)
    )
