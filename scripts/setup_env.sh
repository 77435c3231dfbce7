#!/usr/bin/env bash
# Create (once) the project virtualenv .venv with the pinned CPU requirements and reprflow itself.
# Reruns are cheap: pip is skipped when requirements.txt and pyproject.toml have not changed since
# the last install (stamp: .venv/.reprflow-requirements.sha256).
#
# Output: one line per step with its duration. On a terminal the long install also shows the
# package pip is working on, on one self-overwriting line; in CI logs it stays one line. pip's full
# output goes to .venv/setup.log, whose tail is printed if a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOG=.venv/setup.log
n_steps=4

step() {  # step N "what": print the step line, remember when it started
  step_no=$1
  step_t0=$SECONDS
  printf '[setup %s/%s] %s\n' "$1" "$n_steps" "$2"
}

done_step() {  # on a terminal, also clears pip's status line
  [ -t 1 ] && printf '\r\033[K'
  printf '[setup %s/%s] done in %ss\n' "$step_no" "$n_steps" "$((SECONDS - step_t0))"
}

pip_step() {  # pip_step ARGS...: pip install ARGS, full output to $LOG, a live one-line status on a terminal
  local rc=0
  if [ -t 1 ]; then
    .venv/bin/python -m pip install --progress-bar off "$@" 2>&1 | tee -a "$LOG" | while IFS= read -r line; do
      case $line in
        Collecting*|Downloading*|Building*|Installing*) printf '\r\033[K  %.70s' "$line" ;;
      esac
    done || rc=$?
  else
    .venv/bin/python -m pip install -q "$@" >>"$LOG" 2>&1 || rc=$?
  fi
  if [ "$rc" -ne 0 ]; then
    [ -t 1 ] && printf '\r\033[K'
    printf '[setup %s/%s] FAILED: pip install %s (last lines of %s below)\n' "$step_no" "$n_steps" "$*" "$LOG" >&2
    tail -n 30 "$LOG" >&2
    exit "$rc"
  fi
}

if [ ! -x .venv/bin/python ]; then
  "$PY" -c 'import sys; assert sys.version_info >= (3, 11), "reprflow needs Python >= 3.11"'
  step 1 "creating .venv with $("$PY" --version 2>&1)"
  "$PY" -m venv .venv
  done_step
else
  printf '[setup 1/%s] .venv exists (%s)\n' "$n_steps" "$(.venv/bin/python --version 2>&1)"
fi
# Byte-compile the project's package and benchmark helpers (cheap when up to date). Python would
# write these .pyc files at first import, but not where PYTHONDONTWRITEBYTECODE is set (as on the
# 2-core machine the suite is timed on): there every process (each workflow job, each snakemake
# start) compiled reprflow's modules again, ~1.2 s of CPU per extraction job. An edited module's stale
# .pyc is ignored (its recorded mtime and size no longer match), so edits take effect at once.
.venv/bin/python -m compileall -q -j 0 reprflow benchmarks >/dev/null 2>&1 || true
stamp=.venv/.reprflow-requirements.sha256
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  printf '[setup 2-4/%s] requirements unchanged since the last install: nothing to do\n' "$n_steps"
  exit 0
fi
: >"$LOG"
step 2 "upgrading pip and setuptools (>= 77, builds reprflow offline)"
pip_step --upgrade pip "setuptools>=77"
done_step
step 3 "installing $(grep -c '^[A-Za-z]' requirements.txt) pinned packages from requirements.txt (a few minutes)"
# pip byte-compiles what it installs on one core (60% of this step on 2 cores); compileall -j 0
# does the same on every core (2 cores, 2026-12-07: 111 s -> 82 s alone, 132 s -> 95 s within
# .ci/run). Files that do not compile (Python 2 leftovers in some packages) are skipped, as pip does.
pip_step --no-compile -r requirements.txt
.venv/bin/python -m compileall -q -j 0 "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
  >>"$LOG" 2>&1 || true
done_step
step 4 "installing reprflow (editable)"
pip_step --no-deps --no-build-isolation -e .
done_step
echo "$want" > "$stamp"
printf '[setup] ready: .venv/bin/python, .venv/bin/reprflow, .venv/bin/snakemake (pip log: %s)\n' "$LOG"
