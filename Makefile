# The two commands of the README. Each sets up .venv on first use (pinned by constraints.txt).
#   make test   run every test: library, grading, book hygiene, and every notebook through nbval
#   make book   build the whole book (executes the chapters) into _build/html
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Parallel test workers; each gets one thread (oversubscribed threads are slower than serial).
WORKERS ?= auto

.PHONY: test book setup clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,book]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (llmbook)" >/dev/null
	touch $@

test: setup
	OMP_NUM_THREADS=1 MPLBACKEND=Agg $(BIN)/python -m pytest -n $(WORKERS) --durations=15 $(PYTEST_ARGS)

book: setup
	rm -rf _build
	$(BIN)/jupyter-book build . -W -n --keep-going

clean:
	rm -rf _build $(VENV) .jupyter_cache
