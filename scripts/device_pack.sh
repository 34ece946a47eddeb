#!/usr/bin/env bash
# Pack the Python packages the GPU machine (the `device` tool) lacks into .gpu/ (git-ignored), small
# enough to travel beside the repository (64 MiB per call, tracked files included; see docs/DEVICE.md):
#   .gpu/wh/mp.tar.xz   mediapipe 0.10.21 (face mesh, face detection and selfie segmentation models
#                       only) + protobuf 4.25.9, ~14 MB; works with the machine's numpy 2.x
#   .gpu/wh/av.tar.xz   PyAV 18.1 (FFmpeg with libx264), ~25 MB
#   .gpu/diffusers/     diffusers 0.42.1 (+ importlib_metadata, zipp) wheels, ~6 MB
# Each archive unpacks into /tmp/site there: `tar -xJf .gpu/wh/NAME.tar.xz -C /tmp/site`.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
download() {  # wheels for the device's CPython 3.12 on x86-64 Linux
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$@"
}
mkdir -p .gpu/wh .gpu/diffusers
download "$tmp/mp" mediapipe==0.10.21 protobuf==4.25.9
mkdir "$tmp/mp/site"
for w in "$tmp"/mp/*.whl; do "$py" -m zipfile -e "$w" "$tmp/mp/site"; done
# The hand, pose and holistic models are most of the wheel and unused; their Python modules stay
# (mediapipe.solutions imports them).
find "$tmp/mp/site/mediapipe/modules" -name '*.tflite' \
  \( -path '*hand_landmark*' -o -path '*palm_detection*' -o -path '*pose_*' -o -path '*holistic*' \) -delete
tar -C "$tmp/mp/site" -cJf .gpu/wh/mp.tar.xz .
download "$tmp/av" av==18.1.0
mkdir "$tmp/av/site"
"$py" -m zipfile -e "$tmp"/av/av-*.whl "$tmp/av/site"
tar -C "$tmp/av/site" -cJf .gpu/wh/av.tar.xz .
download .gpu/diffusers diffusers==0.42.1 importlib_metadata zipp
ls -l .gpu/wh .gpu/diffusers
