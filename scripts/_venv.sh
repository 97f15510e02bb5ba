# Sourced by scripts/run and scripts/test: make sure ./.venv exists and holds the project
# with the given extras. Idempotent, so both commands work on a fresh clone and on a used one.
set -euo pipefail
extras="${1:-}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py=""
for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
        py="$candidate"
        break
    fi
done
if [ -z "$py" ]; then
    echo "postee: Python 3.11 or newer is required (tried python3.11, python3.12, python3.13, python3)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
fi
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec"
export PATH="$root/.venv/bin:$PATH"
