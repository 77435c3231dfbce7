#!/usr/bin/env bash
# Fill .gpu/ with what an offline GPU machine needs beyond its own torch/triton/transformers image:
# wheels pinned by requirements.txt for the machine's Python (default cp312, manylinux x86_64), the
# mamba-ssm and causal-conv1d sdists, and Snakemake and its closure (for the workflow runs:
# benchmarks/paper_rehearsal_gpu.sh, matched_gpu.sh). Run it on a machine that
# reaches PyPI; the GPU scripts install from .gpu/ without a network (benchmarks/gpu_site.sh).
#
#   bash benchmarks/gpu_wheels.sh [PYVER]        (repo root; PYVER default 312)
#
# Left out: torch, triton and the CUDA libraries (the machine's own), the developer tools and DVC
# (not needed on the GPU), and what a torch image already has (sympy, networkx, jinja2, filelock,
# fsspec, typing_extensions) or the GPU runs never import (matplotlib and its closure). Set
# WITH_SCIENTIFIC=1 to add scipy, pandas and scikit-learn (54 MB) for an image without them.
# pulp's bundled CBC solvers are trimmed to linux x86_64 (16 MB -> 3 MB). A device call carries at
# most 64 MiB with the working tree: the script prints the total.
set -euo pipefail
PYVER=${1:-312}
DEST=.gpu
mkdir -p "$DEST"
plat=(--platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform any)
get() {  # get DIR PIN...: binary wheels for the target Python, no dependencies (the pins are the closure)
  local dir=$1; shift
  for pin in "$@"; do
    python3 -m pip download -q -d "$dir" --no-deps --only-binary=:all: --python-version "$PYVER" \
      --implementation cp --abi "cp$PYVER" --abi abi3 --abi none "${plat[@]}" "$pin" 2>/dev/null \
      || python3 -m pip wheel -q --no-deps -w "$dir" "$pin"  # a pure-Python sdist (e.g. connection_pool)
  done
}
pins() { grep -h -v '^#\|^ \|^$' requirements.txt requirements-gpu.txt | sed 's/ .*//'; }
core='^(transformers|tokenizers|huggingface_hub|safetensors|zarr|numcodecs|donfig|google-crc32c|regex|einops)=='
skip='^(torch|numpy|dvc|dvc-.*|black|ruff|snakefmt|shfmt-py|celery|kombu|amqp|billiard|vine|click-.*|asyncssh|scmrepo|pygit2|dulwich|gto|sqltrie|iterative-telemetry|hydra-core|omegaconf|antlr4-python3-runtime|typer|shtab|dictdiffer|diskcache|flufl.lock|funcy|grandalf|pydot|voluptuous|zc.lockfile|shortuuid|atpublic|pygtrie|aiohttp|aiohappyeyeballs|aiosignal|frozenlist|multidict|yarl|propcache|aiohttp-retry|cryptography|cffi|pycparser|hf-xet|sympy|networkx|mpmath|Jinja2|MarkupSafe|filelock|fsspec|typing_extensions|matplotlib|pillow|fonttools|kiwisolver|contourpy|cycler|pyparsing|pulp|PuLP)=='
scientific='^(scipy|pandas|scikit-learn)=='
get "$DEST" $(pins | grep -E "$core")
get "$DEST" $(pins | grep -v -E "$core" | grep -v -E "$skip" | grep -v -E "$scientific")
[ "${WITH_SCIENTIFIC:-0}" = 1 ] && get "$DEST" $(pins | grep -E "$scientific")
# pulp without the CBC builds of other platforms (Snakemake's ILP scheduler; --scheduler greedy needs none)
tmp=$(mktemp -d); get "$tmp" "$(pins | grep -i '^pulp==')"
python3 - "$tmp"/[Pp]u[Ll][Pp]-*.whl "$DEST" <<'EOF'
import sys, zipfile
from pathlib import Path
src = zipfile.ZipFile(sys.argv[1])
drop = lambda name: "solverdir/cbc/" in name and "solverdir/cbc/linux/i64" not in name
with zipfile.ZipFile(Path(sys.argv[2]) / Path(sys.argv[1]).name, "w", zipfile.ZIP_DEFLATED) as dst:
    for info in src.infolist():
        if drop(info.filename):
            continue
        data = src.read(info.filename)
        if info.filename.endswith("RECORD"):  # the dropped files' lines too
            data = b"\n".join(line for line in data.split(b"\n") if not drop(line.decode()))
        dst.writestr(info, data)
EOF
rm -rf "$tmp"
# the sdists (pip download would build their metadata, which needs torch): from PyPI's simple index
for pin in mamba-ssm==2.3.2.post1 causal-conv1d==1.7.0; do
  name=${pin%%==*}; version=${pin##*==}; file="${name//-/_}-$version.tar.gz"
  [ -f "$DEST/$file" ] && continue
  url=$(curl -fsS "https://pypi.org/simple/$name/" | grep -o "href=\"[^\"]*/$file#sha256=[0-9a-f]*\"" | head -1 | cut -d'"' -f2)
  [ -n "$url" ] || { echo "gpu_wheels: $file not found on PyPI's simple index" >&2; exit 1; }
  curl -fsSL -o "$DEST/$file" "${url%%#*}"
  echo "${url##*sha256=}  $DEST/$file" | sha256sum -c --quiet
done
echo "gpu_wheels: $(ls "$DEST"/*.whl | wc -l) wheels and $(ls "$DEST"/*.tar.gz | wc -l) sdists in $DEST; $(du -sh "$DEST" | cut -f1) in all (a device call carries 64 MiB with the tree)"
