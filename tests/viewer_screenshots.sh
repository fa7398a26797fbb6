#!/usr/bin/env bash
# Headless viewer run: screenshots at two tokens from the repository root must exist, be at least 800x600, not be
# blank, and differ; the viewer must exit 0 (it exits 1 on an OpenGL error). A screenshot that cannot be written
# (no such directory; a full disk, as a file size limit) exits 4 and leaves no file. A negative --bench-frames is
# refused at once (exit 2), and so is a --screenshot path that is a FIFO or a symbolic link. Exit 77 (skipped) where
# no X server can be started (no xvfb-run).
set -euo pipefail
viewer=$1
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
set +e
timeout 20 "$viewer" --bench-frames -5 > "$out/neg.log" 2>&1
rc=$?
set -e
echo "--bench-frames -5: exit $rc ($(head -c 200 "$out/neg.log" | tr '\n' ' '))"
[ "$rc" = 2 ] || { echo "FAIL: --bench-frames -5 must be refused with exit 2"; exit 1; }
# A --screenshot path that is a FIFO or a symbolic link is refused (exit 2) before any rendering, and left as it was
# (before: replaced by a PNG).
mkfifo "$out/fifo.png"
echo keep > "$out/target.txt"
ln -s "$out/target.txt" "$out/link.png"
for shot in fifo.png link.png; do
  set +e
  timeout 60 "$viewer" --headless --no-tour --screenshot "$out/$shot" > "$out/$shot.log" 2>&1
  rc=$?
  set -e
  echo "--screenshot $shot: exit $rc ($(grep gdn2-viewer "$out/$shot.log" | tail -1))"
  [ "$rc" = 2 ] && grep -q "regular file" "$out/$shot.log" || { echo "FAIL: --screenshot $shot must be refused with exit 2"; exit 1; }
done
[ -p "$out/fifo.png" ] && [ -L "$out/link.png" ] && [ "$(cat "$out/target.txt")" = keep ] ||
  { echo "FAIL: a refused --screenshot target was changed"; exit 1; }
rm -f "$out/fifo.png" "$out/link.png" "$out/target.txt" "$out"/*.png.log
command -v xvfb-run > /dev/null || { echo "SKIP: xvfb-run not installed"; exit 77; }
cd "$root"
for case in missing-dir full-disk; do
  set +e
  if [ $case = missing-dir ]; then
    shot=$out/no/such/dir/x.png
    # the directory is created by the viewer; make its parent a file so that it cannot be
    touch "$out/no"
    xvfb-run -a -s "-screen 0 1600x900x24" "$viewer" --headless --no-tour --screenshot "$shot" > "$out/$case.log" 2>&1
  else
    shot=$out/full.png
    xvfb-run -a -s "-screen 0 1600x900x24" bash -c 'trap "" XFSZ; ulimit -f 8; exec "$0" "$@"' "$viewer" --headless --no-tour --screenshot "$shot" > "$out/$case.log" 2>&1
  fi
  rc=$?
  set -e
  left=$(ls "$out" | grep -c 'full.png\|x.png' || true)
  echo "screenshot, $case: exit $rc, files left $left: $(grep gdn2-viewer "$out/$case.log" | tail -1)"
  [ "$rc" = 4 ] || { echo "FAIL: an unwritable screenshot ($case) must exit 4 (a write failure, as gdn2's)"; exit 1; }
  [ ! -e "$shot" ] && [ "$left" = 0 ] || { echo "FAIL: a failed screenshot ($case) left a file"; exit 1; }
done
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
