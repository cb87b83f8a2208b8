#!/usr/bin/env bash
# The whole GPU acceptance run on a lent CUDA machine without network, as ONE prepared command.
#
# Here (any machine with pip and network, in the repo root), once:
#     bash bench/gpu_check_device.sh wheels
#   downloads the wheels the GPU machine lacks into .whl/ (diffusers, pure Python; SageAttention 1, pure
#   Python Triton kernels, so the sage rows run) and lists .whl/ in .git/info/exclude.
# There (the GPU machine; the repo root is the working directory; carry .whl/ along):
#     bash bench/gpu_check_device.sh run [SECONDS]        # SECONDS: the whole command's budget, default 540
#   1. prints the GPU and installs .whl/*.whl into /tmp/site (no index, no dependencies);
#   2. runs bench/gpu_check.py with --deadline-s 330 (everything but compile; < 6 min on an H100);
#   3. with the time left, a second process runs the compile rows (--only compile) into compile/;
#   writing under $OUT (else ./gpu_report): setup.log, gpu_check.json, gpu_check.log,
#   compile/gpu_check.json, compile/gpu_check.log. Exit code: the main run's (0 = every check passed).
# GPU_CHECK_EXTRA (e.g. --dry-run, to try this script on a CPU) is added to both gpu_check.py calls.
set -u
DIFFUSERS=diffusers==0.42.1
SAGE=sageattention==1.0.6
MAIN_DEADLINE=330
MAIN_PARTS=placement,stage1_forward,stage2_forward,stage2_4_steps,vae_decode,stage1_modes,stage2_modes

wheels() {
    mkdir -p .whl .git/info
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "$DIFFUSERS" "$SAGE"
    ls -l .whl
}

run() {
    local budget=${1:-540} out=${OUT:-gpu_report} start status
    start=$(date +%s)
    mkdir -p "$out/compile"
    export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
    {
        nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
        ls .whl/*.whl
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl
    } > "$out/setup.log" 2>&1
    status=$?
    if [ $status -ne 0 ]; then
        cat "$out/setup.log"
        echo "setup failed (exit $status): are the wheels carried (.whl/)?"
        return $status
    fi
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers',
diffusers.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())" \
        2>&1 | tee -a "$out/setup.log"
    timeout -k 10 $((MAIN_DEADLINE + 90)) python3 bench/gpu_check.py --out "$out" --deadline-s "$MAIN_DEADLINE" \
        --only "$MAIN_PARTS" ${GPU_CHECK_EXTRA:-} > "$out/gpu_check.log" 2>&1
    status=$?
    tail -n 60 "$out/gpu_check.log"
    local left=$((budget - ($(date +%s) - start) - 15))
    if [ $left -gt 120 ]; then
        echo "compile rows: ${left} s left"
        timeout -k 10 "$left" python3 bench/gpu_check.py --out "$out/compile" --deadline-s $((left - 20)) \
            --only compile ${GPU_CHECK_EXTRA:-} > "$out/compile/gpu_check.log" 2>&1
        tail -n 12 "$out/compile/gpu_check.log"
    else
        echo "compile rows skipped: ${left} s left" | tee "$out/compile/gpu_check.log"
    fi
    return $status
}

case "${1:-}" in
    wheels) wheels ;;
    run) shift; run "$@" ;;
    *) echo "usage: bash bench/gpu_check_device.sh wheels | run [SECONDS]"; exit 2 ;;
esac
