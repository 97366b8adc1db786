#!/usr/bin/env bash
# Build the mona_mm environment from nothing: a venv in .venv with the pinned OpenMMLab stack,
# mmcv 2.1.0 compiled from source with its ops (wheel cached outside the clone), and mona_mm.
# Idempotent: a second run only checks and returns in seconds.
#
# Env knobs: MONA_MM_VENV (default <repo>/.venv), MONA_MM_CACHE (default ~/.cache/mona_mm),
#            PYTHON (default python3.11 or python3), MAX_JOBS (mmcv build parallelism).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MONA_MM_VENV:-$ROOT/.venv}"
CACHE="${MONA_MM_CACHE:-$HOME/.cache/mona_mm}"
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
STAMP="$VENV/.mona_mm_stamp"
# The stamp covers every file that decides what goes into the venv.
WANT="$(cat "$ROOT/requirements/"*.txt "$ROOT/tools/setup_env.sh" "$ROOT/setup.py" | sha1sum | cut -c1-16)"

log() { echo "[setup_env] $*"; }

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  log "environment up to date ($VENV)"
  exit 0
fi

[[ -x "$VENV/bin/python" ]] || { log "creating venv $VENV"; "$PY" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q -c "$ROOT/requirements/constraints.txt")
# setuptools < 80: mmcv 2.1.0's setup.py imports pkg_resources.
"${PIP[@]}" --upgrade "pip==24.3.1" setuptools "wheel==0.45.1" "ninja==1.11.1.1"
log "installing torch/torchvision and the pinned stack (minutes on a cold machine)"
# mmdet/mmseg/mmpretrain declare mmcv; install it first from our own wheel so pip never tries
# to fetch or build one on its own.
TORCH_VER="$("$VENV/bin/python" -c 'import torch;print(torch.__version__.split("+")[0])' 2>/dev/null || true)"
if [[ -z "$TORCH_VER" ]]; then
  "${PIP[@]}" torch torchvision numpy
  TORCH_VER="$("$VENV/bin/python" -c 'import torch;print(torch.__version__.split("+")[0])')"
fi
PYTAG="$("$VENV/bin/python" -c 'import sys;print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
CUDA_TAG="cpu"
if command -v nvcc >/dev/null && "$VENV/bin/python" -c 'import torch,sys;sys.exit(0 if torch.cuda.is_available() else 1)'; then
  CUDA_TAG="cuda"
fi
# Keyed by torch version, python and ops flavour: a different torch never reuses this wheel.
WHEEL_DIR="$CACHE/mmcv-2.1.0-torch$TORCH_VER-$PYTAG-$CUDA_TAG"
if ! ls "$WHEEL_DIR"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
  log "building mmcv 2.1.0 with $CUDA_TAG ops against torch $TORCH_VER (about 10-20 min on 2 cores, once)"
  mkdir -p "$CACHE/bin" "$WHEEL_DIR.tmp"
  # torch >= 2.14 headers need C++20 but mmcv's setup.py hard-codes -std=c++17; a compiler shim
  # upgrades the flag instead of editing mmcv's sources.
  cat > "$CACHE/bin/cxx20" <<'SH'
#!/usr/bin/env bash
args=(); for a in "$@"; do [[ "$a" == "-std=c++17" || "$a" == "-std=c++14" ]] && a="-std=c++20"; args+=("$a"); done
exec "${REAL_CXX:-g++}" "${args[@]}"
SH
  chmod +x "$CACHE/bin/cxx20"
  export CC="$CACHE/bin/cxx20" CXX="$CACHE/bin/cxx20" MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}"
  [[ "$CUDA_TAG" == "cuda" ]] && export FORCE_CUDA=1
  PATH="$VENV/bin:$PATH" "$VENV/bin/python" -m pip wheel --disable-pip-version-check --no-deps \
    --no-build-isolation --no-binary mmcv -w "$WHEEL_DIR.tmp" "mmcv==2.1.0"
  rm -rf "$WHEEL_DIR" && mv "$WHEEL_DIR.tmp" "$WHEEL_DIR"
  unset CC CXX
fi
"${PIP[@]}" --no-deps "$WHEEL_DIR"/mmcv-2.1.0-*.whl
# deploy.txt: the `deploy` extra (ONNX export), which the tests exercise.
"${PIP[@]}" -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/tests.txt" \
  -r "$ROOT/requirements/deploy.txt"
# transformers >= 5 breaks `import mmpretrain.models` (and so mmdet/mmseg models).
"$VENV/bin/python" -m pip uninstall -y -q transformers >/dev/null 2>&1 || true
log "installing mona_mm (editable)"
# --no-use-pep517 keeps this a `setup.py develop` install (pip prints a deprecation notice for
# it): setup.py then links configs/, tools/ and model-index.yml into mona_mm/.mim, and mim
# 0.3.9, which looks for them under <distribution location>/mona_mm, finds them in the repo. A
# PEP 660 editable install would put the distribution in site-packages, out of mim's sight.
"${PIP[@]}" --no-deps --no-build-isolation --no-use-pep517 -e "$ROOT"
"$VENV/bin/python" -c 'import os.path as o, sys; from mim.utils import get_installed_path as g
p = o.join(g("mona_mm"), ".mim", "model-index.yml")
sys.exit(0 if o.isfile(p) else f"[setup_env] mim cannot find {p}")'
"$VENV/bin/python" - <<'PY'
import torch, mmcv, mmcv.ops, mmengine, mmdet.models, mmseg.models, mmpretrain.models, mona_mm
from mmcv.ops import nms, RoIAlign
b = torch.rand(8, 4); b[:, 2:] += b[:, :2]
nms(b, torch.rand(8), 0.5)
print('[setup_env] stack ok: torch', torch.__version__, '| mmcv', mmcv.__version__, '| mmengine', mmengine.__version__)
PY
echo "$WANT" > "$STAMP"
