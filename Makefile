# bestiary: `make demo` and `make test` each do all the set-up they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_PORT ?= 8765
DEMO_OUT ?= demo_out
# test processes (pytest-xdist), a test file to each at a time; the suite's builds use one core each
TEST_WORKERS ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: setup browser demo bigworld test test-all bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# librosa's modules compile their numba kernels into its cache when first loaded (35 s here): once, at
	# set-up, not inside the first request or test that draws a spectrogram (librosa loads them lazily)
	$(BIN)/python -c "import librosa; librosa.feature.melspectrogram"
	touch $@

# The browser test drives Debian's chromium; installed here when this machine can (root with apt-get).
CAN_APT := $(shell command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && echo 1)
browser:
ifeq ($(CAN_APT),1)
	@command -v chromium >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
	  || (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null)
endif

setup: $(VENV)/.installed browser

demo: setup
	DEMO_PORT=$(DEMO_PORT) DEMO_OUT=$(DEMO_OUT) bash scripts/demo.sh

bigworld: setup
	bash scripts/bigworld.sh

test: setup
	BESTIARY_REQUIRE_BROWSER=$(CAN_APT) $(BIN)/python -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile

test-all: setup
	BESTIARY_REQUIRE_BROWSER=$(CAN_APT) $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
