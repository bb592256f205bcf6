# One-command set-up and tests on a fresh machine (CPU). torch is pinned first: an unpinned torch
# would pull gigabytes of CUDA packages. The official sam2 package is a test oracle only; it is
# installed without its dependencies because it requires torchvision, which masklet does not need.
# The active virtual environment's python, else python3 (plain Debian/Ubuntu has no `python`).
PYTHON ?= $(shell if [ -n "$$VIRTUAL_ENV" ]; then echo "$$VIRTUAL_ENV/bin/python"; else command -v python3 || command -v python; fi)
# torch from pip's configured index by default. On the public PyPI that is the CUDA build; for the
# CPU-only wheels: make install TORCH_INDEX=https://download.pytorch.org/whl/cpu (cu126 for CUDA 12.6)
TORCH_INDEX ?=

.PHONY: install install-demo install-test demo test bench

install:
	$(PYTHON) -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PYTHON) -m pip install --quiet -e .

install-demo: install
	$(PYTHON) -m pip install --quiet -e ".[demo]"

# The offline demo on the packaged masklet-nano: click, box, automatic masks, tracking (no network).
demo: install-demo
	$(PYTHON) -m masklet demo --out masklet-demo

install-test: install
	@echo 'note: pip may report "sam2 1.1.0 requires torchvision, which is not installed": expected, sam2 is a test oracle installed without its dependencies'
	$(PYTHON) -m pip install --quiet --no-deps sam2==1.1.0
	$(PYTHON) -m pip install --quiet --no-deps ultralytics==8.4.190
	$(PYTHON) -m pip install --quiet -e ".[test,server,client]"
	$(PYTHON) -m masklet.web_vendor  # onnxruntime-web for the page's in-browser decoding (npm, pinned + integrity)

test: install-test
	$(PYTHON) -m pytest tests

bench: install-test
	$(PYTHON) benchmarks/image_predictor.py
	$(PYTHON) benchmarks/amg.py
	$(PYTHON) benchmarks/video_predictor.py
	$(PYTHON) benchmarks/exemplar.py

# Mutation gate (issue 15): mutmut generates the mutants of each scored core module (scratch
# copies under build/mutation/); tests/mutation/run_mutants.py runs each mutant against only the
# tests covering its line (coverage contexts), at nice 19. Hours of CPU: on demand or scheduled,
# never in CI. Report: docs/mutation-report.md. One module: make mutation MODULES=masks
MUTATION_SCORED = transforms masks prompts image checkpoints amg video
MODULES ?=
.PHONY: mutation
mutation: install-test
	$(PYTHON) -m pip install --quiet -e ".[mutation]"
	for m in $(or $(MODULES),$(MUTATION_SCORED)); do nice -n 19 $(PYTHON) tests/mutation/run_mutants.py $$m || exit 1; done
