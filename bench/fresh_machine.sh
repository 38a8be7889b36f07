#!/usr/bin/env bash
# A newcomer's first commands: clone this repo, make a new virtual environment, run README.md's two
# commands as typed, and print each wall time (what bench/RESULTS.md records for the locked install).
#   bash bench/fresh_machine.sh            # both: the main job, then the tests (each in its own clone and venv)
#   bash bench/fresh_machine.sh test       # only the install + test command
#   bash bench/fresh_machine.sh main       # only the install + main job
# An empty pip cache (PIP_NO_CACHE_DIR=1) measures a first install; by default pip's cache is used.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
which=${1:-both}
# The two commands are the README's lines that start with the locked install.
mapfile -t commands < <(grep -E "^pip install -r requirements-cpu.txt" "$repo/README.md")
[[ ${#commands[@]} -eq 2 ]] || { echo "expected the README's two commands, found ${#commands[@]}" >&2; exit 1; }
main=${commands[0]} test=${commands[1]}
run() {  # name, command
  local work
  work=$(mktemp -d)
  git clone -q "$repo" "$work/memguard"
  (
    cd "$work/memguard"
    python3 -m venv .venv
    # shellcheck disable=SC1091
    . .venv/bin/activate
    start=$SECONDS
    bash -c "$2" > "$work/$1.log" 2>&1 || { tail -30 "$work/$1.log"; echo "$1: FAILED after $((SECONDS - start)) s" >&2; exit 1; }
    echo "$1: $((SECONDS - start)) s ($(date -u +%FT%TZ), log $work/$1.log)"
    tail -3 "$work/$1.log"
  )
}
[[ $which == test ]] || run main "$main"
[[ $which == main ]] || run test "$test"
