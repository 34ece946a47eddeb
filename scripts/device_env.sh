# Source this on the GPU machine (the `device` tool) from the repository root:
#   source scripts/device_env.sh
# It makes the repo importable as `gafkit` without installing it (gafkit.recon / .trackers / .diffusion
# point at the top-level folders, as the setuptools package-dir mapping does), installs gsplat from the
# carried wheel and loads its prebuilt CUDA extension (no 80 s JIT build), and unpacks nvdiffrast when
# its prebuilt tarball is carried. Carried, git-ignored inputs (see docs/DEVICE.md):
#   .gpu/gsplat_py/gsplat (the wheel's Python files) or .gpu/gsplat/gsplat-1.5.3-py3-none-any.whl,
#   .gpu/gsplat/prebuilt/gsplat_cuda.so or gsplat_cuda.so.xz (docs/DEVICE.md, "Rebuilding the kit"; the
#   loader gsplat imports in place of its JIT build is scripts/gsplat_csrc.py),
#   .gpu/nvdiffrast/nvdr.txz or nvdr.tgz (optional; the built extension stripped, 0.8 MB as .txz),
#   .gpu/diffusers/*.whl (diffusers + importlib_metadata + zipp wheels; the prior needs them)
set -e
for pkg in recon trackers diffusion; do ln -sfn "../$pkg" "gafkit/$pkg"; done
SITE=/tmp/site
mkdir -p "$SITE"
if [ -d .gpu/gsplat_py/gsplat ] && [ ! -d "$SITE/gsplat" ]; then
  # The wheel's Python files only (its CUDA sources are not needed with the prebuilt extension).
  cp -r .gpu/gsplat_py/gsplat "$SITE/"
elif [ -f .gpu/gsplat/gsplat-1.5.3-py3-none-any.whl ] && [ ! -d "$SITE/gsplat" ]; then
  python -m pip install -q --no-deps --target "$SITE" .gpu/gsplat/gsplat-1.5.3-py3-none-any.whl
fi
prebuilt=
if [ -f .gpu/gsplat/prebuilt/gsplat_cuda.so ]; then
  prebuilt="$PWD/.gpu/gsplat/prebuilt/gsplat_cuda.so"
elif [ -f .gpu/gsplat/prebuilt/gsplat_cuda.so.xz ]; then
  # xz shrinks the 16 MB extension to 2 MB of the 64 MiB that may travel.
  [ -f /tmp/gsplat_cuda.so ] || python -c "import lzma, shutil; shutil.copyfileobj(lzma.open('.gpu/gsplat/prebuilt/gsplat_cuda.so.xz'), open('/tmp/gsplat_cuda.so', 'wb'))"
  prebuilt=/tmp/gsplat_cuda.so
fi
if [ -n "$prebuilt" ]; then
  cp scripts/gsplat_csrc.py "$SITE/gsplat/csrc.py"
  export GSPLAT_PREBUILT="$prebuilt"
fi
if ls .gpu/diffusers/*.whl >/dev/null 2>&1 && [ ! -d "$SITE/diffusers" ]; then
  # diffusers is pure Python; the image has its other dependencies.
  python -m pip install -q --no-deps --target "$SITE" .gpu/diffusers/*.whl
fi
for nvdr in .gpu/nvdiffrast/nvdr.txz .gpu/nvdiffrast/nvdr.tgz; do
  if [ -f "$nvdr" ] && [ ! -d /tmp/nvdr ]; then
    tar -xf "$nvdr" -C /tmp
  fi
done
export PYTHONPATH="$PWD:$SITE:/tmp/nvdr${PYTHONPATH:+:$PYTHONPATH}"
set +e
