# Two commands do all set-up on a fresh machine:
#   make book   create the environment if missing, generate the demo data, execute every notebook
#               on the demo profile (papermill) and render the HTML book into _build/html
#   make test   the test suite (unit tests, notebook runs, the demo book build)
#   make publish  push the built _build/html to the gh-pages branch (ghp-import)
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := book

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PROFILE ?= demo
TORCH_INDEX ?=
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export MPLBACKEND ?= Agg
export PYTHONHASHSEED ?= 0

MATHJAX_VERSION ?= 3.2.2
MATHJAX := _vendor/mathjax/tex-chtml.js

.PHONY: env notebooks data run book test test-fast test-full browser bench clean mutate mathjax publish

# papermill reads .ipynb: each MyST chapter gets its jupytext pair (generated, not committed)
NOTEBOOKS_IPYNB := $(patsubst %.md,%.ipynb,$(wildcard notebooks/[0-9][0-9]_*.md))

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# the tested pair (constraints.txt), installed first so no resolver pulls a newer torch;
	# TORCH_INDEX=https://download.pytorch.org/whl/cu126 picks the build for a CUDA 12.6 driver
	$(PY) -m pip install --quiet -c constraints.txt torch torchvision $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -c constraints.txt -e ".[book,test]"
	# peer of the zero-shot equivalence tests, without its CLI's dependencies (see pyproject.toml)
	$(PY) -m pip install --quiet --no-deps clip-benchmark==1.6.2
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

notebooks/%.ipynb: notebooks/%.md | $(STAMP)
	$(BIN)/jupytext --quiet --to ipynb --output $@ $<

notebooks: $(NOTEBOOKS_IPYNB)

env: $(STAMP) notebooks

data: env
ifeq ($(PROFILE),demo)
	$(BIN)/clip-study demo-data --profile demo
	$(BIN)/clip-study prepare-demo --profile demo
endif

# GPUS=0,1,2,3 spreads the jobs over those devices of this node; a CPU profile (the demo) runs
# JOBS jobs at a time, sharing the cores (two overlap each other's start-up: 163 s -> 121 s on 2 cores)
JOBS ?= $(if $(filter demo,$(PROFILE)),2,1)
run: data
	$(BIN)/clip-study run --profile $(PROFILE) $(if $(GPUS),--gpus $(GPUS),--jobs $(JOBS))

book: run mathjax
	$(BIN)/clip-study render --profile $(PROFILE)
	$(BIN)/jupyter-book build . --builder html -W -n --keep-going

# Test tiers (tests/<tier>/; README "Test tiers" gives their times):
#   tests/unit       unit tests, metric oracles, peer equivalence (CLIP_benchmark, torch_cka)
#   tests/workflow   the runner, provenance, Slurm, training CLIs: notebooks and jobs executed
#   tests/book       the demo book built with -W and checked page by page in headless Chromium
#   tests/realarch   every chapter on the real architectures (make test-full)
#   marker gpu       CUDA paths, skipped without a device (benchmarks/gpu_check.sh runs them)
# Two pytest-xdist workers: most tests wait on a child process (a kernel, a browser, a job) with one
# core busy. Whole files go to a worker (loadfile): tests/book/test_book.py builds the book once.
TEST_WORKERS ?= 2
test: env browser
	$(PY) -m pytest -ra --durations=15 -n $(TEST_WORKERS) --dist loadfile

# every unit and oracle test, no notebook execution (under 3 minutes on 2 idle cores)
test-fast: env
	$(PY) -m pytest -ra -q tests/unit -m "not slow" -n $(TEST_WORKERS) --dist loadfile

# The full-size tier: every chapter on the real architectures at 224 px with random weights
# (configs/smoke-real.yml; about 20 minutes on 2 CPU cores), kept out of `make test`.
test-full: env
	$(PY) -m pytest -ra -m realarch

# Debian's headless Chromium for the browser check of the built book (skipped when unavailable)
browser:
	@command -v chromium >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium unavailable: the browser check will be skipped"

# MathJax 3 from the npm registry, served by the book itself (book/_ext/offline_mathjax.py): the
# combined TeX-to-HTML component, its fonts, TeX extensions and menu; npm, or curl from the registry.
mathjax: $(MATHJAX)
$(MATHJAX):
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  { (cd "$$tmp" && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null 2>&1) || \
	    curl -fsSL -o "$$tmp/mathjax-$(MATHJAX_VERSION).tgz" https://registry.npmjs.org/mathjax/-/mathjax-$(MATHJAX_VERSION).tgz; } && \
	  tar -xzf "$$tmp"/mathjax-*.tgz -C "$$tmp" && rm -rf _vendor/mathjax && mkdir -p _vendor/mathjax/output && \
	  cp -r "$$tmp"/package/es5/tex-chtml.js "$$tmp"/package/es5/input "$$tmp"/package/es5/ui "$$tmp"/package/es5/a11y \
	    "$$tmp"/package/es5/adaptors _vendor/mathjax/ && cp -r "$$tmp"/package/es5/output/chtml _vendor/mathjax/output/ && \
	  cp "$$tmp"/package/LICENSE _vendor/mathjax/

# Publish the built book to GitHub Pages through the gh-pages branch (CI deploys with
# .github/workflows/book.yml instead). Build first: make book [PROFILE=paper].
publish:
	@test -f _build/html/index.html || { echo "no built book in _build/html: run make book first"; exit 1; }
	$(BIN)/ghp-import --no-jekyll --push --force _build/html

bench: env
	$(PY) benchmarks/extraction.py
	$(PY) benchmarks/concept_probing.py

# Mutation testing (not part of make test: CPU-heavy, about an hour on 2 cores). Mutants of
# helpers/chapters, helpers/metrics and helpers/data/scoring.py against the fast test tier
# ([tool.mutmut] in pyproject.toml); prints the score; survivors: tests/mutation_survivors.md.
mutate: env
	@test -x $(BIN)/mutmut || $(PY) -m pip install --quiet -e ".[book,test,mutate]"
	OMP_NUM_THREADS=1 $(BIN)/mutmut run || true
	$(BIN)/mutmut results > mutants/survivors.txt || true
	$(PY) tools/mutation_survivors.py 0,33 > mutants/survivors.tsv
	$(BIN)/mutmut export-cicd-stats
	$(PY) -c "import json; s = json.load(open('mutants/mutmut-cicd-stats.json')); \
	t = s['total'] - s['skipped']; print(s); print(f\"mutation score: {100 * (s['killed'] + s['timeout']) / t:.1f} % of {t}\")"
	@echo "survivors with the line each changed: mutants/survivors.tsv (reasons: tests/mutation_survivors.md)"

clean:
	rm -rf _build rendered _results/demo _cache/demo $(NOTEBOOKS_IPYNB)
