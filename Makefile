# Two commands on a fresh machine: `make demo` (offline demo) and `make test` (the suite).
# Both create/reuse a local virtualenv in .venv and install what they need.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.mmcam-installed
OUT    ?= out/demo

.PHONY: demo test lint bench install browser clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, from the pinned pair this machine kind serves (CPU use; no newer torch)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 YOLO_OFFLINE=1 YOLO_CONFIG_DIR=$(CURDIR)/.yolo $(VENV)/bin/mmcam demo --out $(OUT)

test: $(STAMP) browser lint
	HF_HUB_OFFLINE=1 YOLO_OFFLINE=1 YOLO_CONFIG_DIR=$(CURDIR)/.yolo $(PY) -m pytest -q

# ruff (configured in pyproject.toml): lint and formatting, the tree must be clean
lint: $(STAMP)
	$(VENV)/bin/ruff check mmcam tests bench examples
	$(VENV)/bin/ruff format --check mmcam tests bench examples

bench: $(STAMP)
	$(PY) -m bench.engine

# Debian's chromium for the browser test (Playwright drives it; never `playwright install`)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

clean:
	rm -rf $(VENV) out .pytest_cache
