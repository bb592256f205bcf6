# One-command set-up and tests on a fresh machine (CPU). torch is pinned first: an unpinned torch
# would pull gigabytes of CUDA packages. The official sam2 package is a test oracle only; it is
# installed without its dependencies because it requires torchvision, which masklet does not need.
PYTHON ?= python

.PHONY: install install-demo install-test demo test bench

install:
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e .

install-demo: install
	$(PYTHON) -m pip install --quiet -e ".[demo]"

# The offline demo on the packaged masklet-nano: click, box, automatic masks, tracking (no network).
demo: install-demo
	$(PYTHON) -m masklet demo --out masklet-demo

install-test: install
	$(PYTHON) -m pip install --quiet --no-deps sam2==1.1.0
	$(PYTHON) -m pip install --quiet --no-deps ultralytics==8.4.190
	$(PYTHON) -m pip install --quiet -e ".[test,server,client]"

test: install-test
	$(PYTHON) -m pytest tests

bench: install-test
	$(PYTHON) benchmarks/image_predictor.py
	$(PYTHON) benchmarks/amg.py
	$(PYTHON) benchmarks/video_predictor.py
	$(PYTHON) benchmarks/exemplar.py
