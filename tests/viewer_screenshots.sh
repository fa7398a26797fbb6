#!/usr/bin/env bash
# Headless viewer run (issue 7): screenshots at two tokens from the repository root must exist, be at least
# 800x600, not be blank, and differ; the viewer must exit 0 (it exits 1 on an OpenGL error).
# Exit 77 (skipped) where no X server can be started (no xvfb-run).
set -euo pipefail
viewer=$1
root=$(cd "$(dirname "$0")/.." && pwd)
command -v xvfb-run > /dev/null || { echo "SKIP: xvfb-run not installed"; exit 77; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cd "$root"
for step in 5 30; do
  xvfb-run -a -s "-screen 0 1600x900x24" "$viewer" --headless --screenshot "$out/step$step.png" --step "$step"
done
/usr/bin/python3 - "$out/step5.png" "$out/step30.png" <<'PY'
import sys
import matplotlib.image as mpimg
a, b = (mpimg.imread(p) for p in sys.argv[1:3])
for p, im in zip(sys.argv[1:3], (a, b)):
    h, w = im.shape[:2]
    std = float(im[..., :3].std())
    print(f"{p}: {w}x{h}, pixel std {std:.3f}")
    assert w >= 800 and h >= 600, "screenshot smaller than 800x600"
    assert std > 0.02, "screenshot is blank"
changed = float((abs(a[..., :3] - b[..., :3]) > 1e-3).mean())
print(f"fraction of pixels that differ between token 5 and token 30: {changed:.3f}")
assert changed > 0.01, "screenshots at two steps do not differ"
PY
