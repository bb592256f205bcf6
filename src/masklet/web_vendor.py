"""Fetch onnxruntime-web (the web page's in-browser decoder runtime) into ``masklet/web`` at build time.

The runtime's WebAssembly alone is ~15 MB, too big to keep in the repository, so it is fetched with
npm at install / CI time (``make web-assets``, ``python -m masklet.web_vendor``) at a pinned version,
checked against a pinned sha512 integrity, and only the three files the page needs are kept.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "1.31.1"
#: npm's ``dist.integrity`` of onnxruntime-web-1.31.1.tgz.
INTEGRITY = "sha512-5GeH+bWQ+HxM10z7erGlsWqryrwMbSvm/1tkIsKTT48g0fI19VXVVC435t4t7VsPdSQeS7NmuZPXrQ73k82URw=="
#: Files kept (tarball path -> name in masklet/web): the ES module with the wasm glue bundled in and
#: the one wasm variant it loads (SIMD; run single-threaded by the page). The npm package ships no
#: licence file (package.json says MIT); its MIT text is kept in the repository as
#: ``masklet/web/onnxruntime-web.LICENSE``.
FILES = {
    "package/dist/ort.wasm.bundle.min.mjs": "ort.wasm.bundle.min.mjs",
    "package/dist/ort-wasm-simd-threaded.wasm": "ort-wasm-simd-threaded.wasm",
}


def web_dir() -> Path:
    """The packaged page's folder, where the files go."""
    return Path(__file__).resolve().parent / "web"


def present(folder: Path | None = None) -> bool:
    """Whether every fetched file is in place."""
    folder = folder or web_dir()
    return all((folder / name).is_file() for name in FILES.values())


def integrity(data: bytes) -> str:
    """npm's subresource-integrity string of a tarball."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def fetch(folder: Path | None = None) -> list[Path]:
    """``npm pack`` the pinned version, check its integrity, extract :data:`FILES` into ``folder``."""
    folder = folder or web_dir()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["npm", "pack", f"onnxruntime-web@{VERSION}", "--silent", "--pack-destination", tmp],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        tarball = Path(tmp) / f"onnxruntime-web-{VERSION}.tgz"
        got = integrity(tarball.read_bytes())
        if got != INTEGRITY:
            raise RuntimeError(f"onnxruntime-web {VERSION}: integrity {got} is not the pinned {INTEGRITY}")
        written = []
        with tarfile.open(tarball) as tar:
            for member, name in FILES.items():
                source = tar.extractfile(member)
                if source is None:
                    raise RuntimeError(f"onnxruntime-web {VERSION}: {member} missing from the tarball")
                (folder / name).write_bytes(source.read())
                written.append(folder / name)
    return written


def main() -> int:
    """Fetch unless already present; print what is there."""
    if not present():
        fetch()
    for name in FILES.values():
        path = web_dir() / name
        print(f"{path} {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
