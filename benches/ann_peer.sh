#!/usr/bin/env bash
# Vector search side by side with hnswlib and faiss, in one run, on the same files.
#
#   benches/ann_peer.sh [N] [DIM]        (default 100000 x 64)
#
# Needs the peer tools beside the project (SHOPDB_TOOLS, default ../shared/tools); installs
# numpy, hnswlib, faiss-cpu and threadpoolctl into target/peer-venv from PyPI on first use.
# Generates N x DIM embedding-like unit vectors (rank 16 plus noise, seed 7) with
# `peer_ann.py gen`, measures hnswlib and faiss with `peer_ann.py run` (one thread, M 16,
# ef_construction 200), then the engine with the same M and ef_construction
# (`cargo run --release --example ann_peer`), and prints both curves and the ratios at recall
# 0.90, 0.95 and 0.99, the exact-scan ratio and the build-CPU ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
DIM=${2:-64}
TOOLS=${SHOPDB_TOOLS:-../shared/tools}
if [ ! -f "$TOOLS/peer_ann.py" ]; then
    echo "ann_peer: no peer tools in $TOOLS (set SHOPDB_TOOLS); skipping"
    exit 0
fi
VENV=target/peer-venv
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q numpy hnswlib faiss-cpu threadpoolctl
fi
DATA=target/ann-$N-$DIM
if [ ! -f "$DATA/queries.f32" ]; then
    "$VENV/bin/python" "$TOOLS/peer_ann.py" gen --n "$N" --dim "$DIM" --rank 16 --seed 7 --out "$DATA"
fi
cargo build --release --example ann_peer
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 "$VENV/bin/python" "$TOOLS/peer_ann.py" run --data "$DATA" --threads 1
target/release/examples/ann_peer "$DATA"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
