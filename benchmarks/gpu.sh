#!/usr/bin/env bash
# The GPU benchmarks as one run, each script's JSON line in a file of OUT: U-Net throughput at batch 64 and 3x9
# instances of the official ImageNet-128 architecture (gpu.json, and gpu.jsonl section by section), the shipped
# synth models' instance at batch 1 and 10 (pipeline_b1.json, pipeline_b10.json) and the geometry on the CPU and
# the GPU (warp.json). --quick: the seconds-long smoke run of each script.
#
#     benchmarks/gpu.sh OUT [--quick]
set -euo pipefail
out=${1:?usage: benchmarks/gpu.sh OUT [--quick]}
quick=${2:-}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
$python "$root/benchmarks/bench_gpu.py" $quick --out "$out/gpu.jsonl" >"$out/gpu.json"
for batch in 1 10; do
    $python "$root/benchmarks/bench_pipeline.py" $quick --batch "$batch" >"$out/pipeline_b$batch.json"
done
$python "$root/benchmarks/bench_warp.py" $quick --repeats 10 >"$out/warp.json"
