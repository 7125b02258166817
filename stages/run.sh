#!/bin/sh
# Runs one facedata stage: `sh stages/run.sh NAME` is `python -m stages.NAME` (dvc.yaml's cmd) with a Python
# that has facedata: $FACEDATA_PYTHON when set; else the interpreter of the DVC process that started this
# command, so `.venv/bin/dvc repro` works without an activated environment; else python3 or python on PATH.
set -u
stage="$1"
has_facedata() { [ -n "$1" ] && "$1" -c "import facedata" >/dev/null 2>&1; }
run() { exec "$1" -m "stages.$stage"; }
if [ -n "${FACEDATA_PYTHON:-}" ]; then run "$FACEDATA_PYTHON"; fi
pid=$$
for _ in 1 2 3 4 5; do
    if [ -r "/proc/$pid/status" ]; then
        pid=$(sed -n "s/^PPid:[[:space:]]*//p" "/proc/$pid/status")
        exe=$(tr "\000" "\n" < "/proc/$pid/cmdline" 2>/dev/null | head -n 1)
    else
        pid=$(ps -o ppid= -p "$pid" 2>/dev/null | tr -d " ")
        exe=$(ps -o args= -p "$pid" 2>/dev/null | cut -d " " -f 1)
    fi
    [ -n "$pid" ] && [ "$pid" -gt 1 ] || break
    case "$exe" in
        *python*) if has_facedata "$exe"; then run "$exe"; fi ;;
    esac
done
for py in python3 python; do
    if has_facedata "$(command -v "$py")"; then run "$(command -v "$py")"; fi
done
echo "stages/run.sh: no Python with facedata found; set FACEDATA_PYTHON or activate its environment" >&2
exit 2
