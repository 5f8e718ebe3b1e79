# Sourced by the scripts: create .venv with uv and install zexec with its dev extra.
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ ! -x .venv/bin/uv ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "uv>=0.4"
fi
.venv/bin/uv pip install --quiet --compile-bytecode --python .venv/bin/python -e '.[dev]'
