#!/usr/bin/env bash
# The GPU check (issue 14): prove aeq on CUDA in one bounded run, or say plainly why not.
#
#   scripts/gpu-check.sh OUT [--wheels DIR] [--repository DIR] [--budget-s 360] [--python PY]
#                            [--keep-work] [-- MORE ARGUMENTS FOR python -m aeq.bench.gpu]
#
# 1. With --wheels, installs what the interpreter lacks, offline: pip resolves onnxruntime-gpu and
#    aeq from DIR against the interpreter's packages, and the wheels it picks go into a scratch
#    folder put first on PYTHONPATH, so onnxruntime-gpu shadows a CPU-only onnxruntime without
#    touching the interpreter's own packages.
# 2. Puts the lib folders of the nvidia-* wheels on LD_LIBRARY_PATH (onnxruntime-gpu does not find
#    them by itself; the loader reads the variable only when a process starts).
# 3. Runs `python -m aeq.bench.gpu`, which shows the driver and ONNX Runtime's providers, starts
#    its own redis-server and `aeq worker --require-gpu`, runs a queued job, measures the engine
#    and the service, and writes OUT/report.json and OUT/report.md (docs/DEPLOY.md, "GPU check").
#
# The whole run, install included, ends within --budget-s (each stage has its own timeout). It
# exits 0 when no stage failed; a host without a GPU gets "no GPU found (REASON)", its CUDA stages
# skipped (never passed), and the rest checked on the CPU. Everything printed is also in OUT/check.log.
set -euo pipefail

DEFAULT_BUDGET_S=360
# The install may use this share of the budget; the rest is the check's.
INSTALL_SHARE_PERCENT=50
# Seconds after the budget before the check is sent SIGTERM (it then still writes the report),
# and after that before it is killed.
TERM_GRACE_S=10
KILL_GRACE_S=15

usage() {
    sed -n '4,5p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

fail_usage() {
    echo "error: $1; see scripts/gpu-check.sh -h" >&2
    exit 2
}

out="" wheels="" repository="${AEQ_MODEL_REPOSITORY:-}" budget_s="$DEFAULT_BUDGET_S"
python_bin="${PYTHON:-python3}" keep_work=0
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) usage ;;
        --wheels) wheels="${2:?--wheels needs a folder}"; shift 2 ;;
        --repository) repository="${2:?--repository needs a folder}"; shift 2 ;;
        --budget-s) budget_s="${2:?--budget-s needs seconds}"; shift 2 ;;
        --python) python_bin="${2:?--python needs an interpreter}"; shift 2 ;;
        --keep-work) keep_work=1; shift ;;
        --) shift; extra=("$@"); break ;;
        -*) fail_usage "unknown option $1" ;;
        *) [ -z "$out" ] || fail_usage "one OUT folder, got '$out' and '$1'"; out="$1"; shift ;;
    esac
done
[ -n "$out" ] || fail_usage "give the OUT folder for the report"
[[ "$budget_s" =~ ^[0-9]+$ ]] && [ "$budget_s" -gt 0 ] || fail_usage "--budget-s must be whole seconds"
[ -z "$wheels" ] || [ -d "$wheels" ] || fail_usage "--wheels $wheels is not a folder"
[ -z "$repository" ] || [ -d "$repository" ] || fail_usage "--repository (or AEQ_MODEL_REPOSITORY) $repository is not a folder"
command -v "$python_bin" >/dev/null || fail_usage "no Python interpreter '$python_bin'"

started_at=$(date +%s)
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/aeq-gpu-check.XXXXXX")
if [ "$keep_work" = 1 ]; then
    trap 'echo "gpu-check: scratch kept in $work"' EXIT
else
    trap 'rm -rf "$work"' EXIT
fi

say() {
    echo "gpu-check: $*"
}

# Installs what the interpreter lacks into $work/site, first on PYTHONPATH and PATH; sets install_*.
# pip resolves against the interpreter's packages (--dry-run --report: nothing changes), then the
# wheels it chose go into the scratch folder with --no-deps --target, which never uninstalls or
# replaces anything of the interpreter's (pip install --prefix would, to change a version).
install_wheels() {
    local started timeout_s plan chosen=()
    started=$(date +%s)
    timeout_s=$((budget_s * INSTALL_SHARE_PERCENT / 100))
    plan="$work/install-plan.json"
    say "installing what $python_bin lacks of onnxruntime-gpu and aeq from $wheels, offline"
    if timeout "$timeout_s" "$python_bin" -m pip install --dry-run --quiet --report "$plan" \
        --no-index --find-links "$wheels" --disable-pip-version-check onnxruntime-gpu aeq \
        >"$out/install.log" 2>&1; then
        mapfile -t chosen < <("$python_bin" -c '
import json, sys, urllib.parse
for item in json.load(open(sys.argv[1]))["install"]:
    print(urllib.parse.unquote(urllib.parse.urlparse(item["download_info"]["url"]).path))
' "$plan")
    fi
    if [ -s "$plan" ] && { [ "${#chosen[@]}" -eq 0 ] || timeout "$timeout_s" "$python_bin" -m pip \
        install --no-index --no-deps --target "$work/site" --no-warn-script-location \
        --disable-pip-version-check --quiet "${chosen[@]}" >>"$out/install.log" 2>&1; }; then
        install_status=passed
        install_detail="installed ${#chosen[@]} wheel(s) into the scratch folder: $(printf '%s ' "${chosen[@]##*/}" | cut -c1-400)"
    else
        install_status=failed
        install_detail="pip failed or took over ${timeout_s} s: $(grep -v '^\s*$' "$out/install.log" | tail -1 | cut -c1-240) (install.log)"
    fi
    install_seconds=$(($(date +%s) - started))
    export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
    export PATH="$work/site/bin:$PATH"
}

run_check() {
    install_status=skipped install_seconds=0
    install_detail="no --wheels given: using what $python_bin has"
    [ -z "$wheels" ] || install_wheels

    if ! "$python_bin" -c "import aeq.bench.gpu.check" 2>"$work/import.err"; then
        say "failed: aeq's GPU check cannot be imported with $python_bin: $(tail -1 "$work/import.err")"
        say "give --wheels DIR holding aeq's wheel and its missing dependencies (docs/DEPLOY.md, 'GPU check')"
        return 1
    fi
    local libraries
    libraries=$("$python_bin" -m aeq.bench.gpu.host cuda-library-path || true)
    if [ -n "$libraries" ]; then
        export LD_LIBRARY_PATH="$libraries${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi

    local remaining=$((budget_s - ($(date +%s) - started_at)))
    [ "$remaining" -gt 0 ] || remaining=1
    local args=(
        "$out" --work "$work" --budget-s "$budget_s" --started-at "$started_at"
        --install-status "$install_status" --install-seconds "$install_seconds"
        --install-detail "$install_detail"
    )
    [ -z "$repository" ] || args+=(--repository "$repository")
    timeout --signal=TERM --kill-after="$KILL_GRACE_S" "$((remaining + TERM_GRACE_S))" \
        "$python_bin" -u -m aeq.bench.gpu "${args[@]}" "${extra[@]}"
}

set +e
run_check 2>&1 | tee "$out/check.log"
status=${PIPESTATUS[0]}
set -e
exit "$status"
