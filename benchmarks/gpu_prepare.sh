#!/usr/bin/env bash
# Copy the pure-Python oracle packages benchmarks/gpu.py needs (the official sam2 and its hydra /
# omegaconf / iopath / antlr4) into .gpu_site/, which the device run carries: the lent GPU machine
# has PyTorch and torchvision but reaches no package index. Run here after `make install-test`, then:
#   device run, carry [".gpu_site"], command:
#   PYTHONPATH=.gpu_site:src PYTHONUNBUFFERED=1 timeout 540 python3 benchmarks/gpu.py 2>&1 | tee $OUT/gpu.log
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.gpu_site/' .git/info/exclude 2>/dev/null || echo '/.gpu_site/' >> .git/info/exclude
rm -rf .gpu_site && mkdir .gpu_site
PYTHON="$(if [ -n "${VIRTUAL_ENV:-}" ]; then echo "$VIRTUAL_ENV/bin/python"; else command -v python3; fi)"
for pkg in sam2 hydra omegaconf iopath antlr4; do
  src="$("$PYTHON" -c "import $pkg, os; print(os.path.dirname($pkg.__file__))")"
  cp -r "$src" .gpu_site/
done
find .gpu_site -name __pycache__ -prune -exec rm -rf {} +
du -sh .gpu_site
