# The two commands of the README. Each sets up .venv on first use (pinned by constraints.txt).
#   make test   run every test: library, grading, book hygiene, the strict book build (which
#               executes every chapter and solutions notebook once), the site in headless
#               Chromium, and the Colab simulation
#   make book   build the whole book (executes the chapters) into _build/html
#   make lint   ruff and mypy, as CI runs them before the tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Parallel test workers; each gets one thread (oversubscribed threads are slower than serial).
WORKERS ?= auto
# Notebooks executed at once by the book build, one thread each (auto: CPU cores, at most 4).
JOBS ?= auto

.PHONY: test book html setup clean gpu-check lint

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,book,lint]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (llmbook)" >/dev/null
	touch $@

# The notebooks run once per test run, inside tests/test_site.py's strict build
# (nbval still runs any notebook on request: pytest chapters/05_attention.ipynb).
test: setup
	OMP_NUM_THREADS=1 MPLBACKEND=Agg $(BIN)/python -m pytest -n $(WORKERS) --durations=25 tests $(PYTEST_ARGS)

book: setup
	@$(MAKE) --no-print-directory html

# The lint gate, run by CI before the tests: ruff (rules in pyproject.toml; the chapters,
# exercises and solutions notebooks included) and mypy on lib/llmbook.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

# The book from a clean _build, without the set-up step (tests/test_site.py runs this with
# its own Python): MathJax and the widget manager from npm (sha512-checked) so the site
# works offline; the cpu base model of chapters 8-11 trained once (or found in the cache),
# so that no chapter's time budget pays for it; every chapter and solutions notebook
# executed, JOBS at a time, into the build's cache; then the strict build, which fails on
# any warning or broken reference.
# (MPLBACKEND=Agg, set for the tests, would stop the kernels from drawing figures inline.)
html:
	rm -rf _build
	$(BIN)/python tools/book_assets.py
	OMP_NUM_THREADS=1 $(BIN)/python -m llmbook.pretrained
	env -u MPLBACKEND $(BIN)/python tools/execute_notebooks.py --jobs $(JOBS)
	env -u MPLBACKEND $(BIN)/jupyter-book build . -W -n --keep-going

# Every chapter executed on the gpu profile, on a machine with a GPU (not part of make test):
# pass/fail, wall and CPU time, GPU and its peak memory per chapter, in _build/gpu-check.md
# and .json. CHAPTERS="05 07" runs some; GPU_CHECK_TIMEOUT is each notebook's budget (s).
GPU_CHECK_TIMEOUT ?= 1800
gpu-check: setup
	$(BIN)/python tools/gpu_check.py --timeout $(GPU_CHECK_TIMEOUT) $(if $(CHAPTERS),--chapters $(CHAPTERS))

clean:
	rm -rf _build $(VENV) .jupyter_cache
