#!/usr/bin/env bash
# Regenerates the screenshots of docs/viewer.md (and the README's) with the headless viewer under xvfb-run.
#   tools/viewer_tour.sh [build/viewer/gdn2-viewer]
set -euo pipefail
cd "$(dirname "$0")/.."
viewer=${1:-build/viewer/gdn2-viewer}
shot() {  # name, then viewer options
  local name=$1; shift
  xvfb-run -a -s "-screen 0 1600x900x24" "$viewer" --headless --screenshot "docs/img/$name.png" "$@"
}
shot viewer-tour                                               # no arguments: the guided tour's first step
shot viewer-tour-kda --tour 6                                  # the tour's step 6: GDN-2 next to its KDA tie
shot viewer-default --no-tour                                  # the shipped MQAR checkpoint, first query
shot viewer-model-write --step 3                               # a value token writes its pair
shot viewer-model-compare --compare --step 16                  # GDN-2 model next to the KDA model
shot viewer-overwrite-erase --scenario overwrite-erase --step 3
shot viewer-overwrite-no-erase --scenario overwrite-no-erase --step 3
shot viewer-soft-update --scenario soft-update --compare --step 3
shot viewer-forget --scenario forget-one-keep-another --step 3
shot viewer-decay --scenario decay-forgetting --step 8
