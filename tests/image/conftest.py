"""The image tests build and run the container image: minutes of CPU, root, podman.

`make image-test` runs them (it sets TIDINGS_IMAGE_TEST=1, and .ci/run calls it after
`make test`); `make test` and a plain `pytest tests` leave this folder out, so the suite stays
fast and passes on a machine that has only Python.
"""

from __future__ import annotations

import os

if not os.environ.get("TIDINGS_IMAGE_TEST"):
    collect_ignore_glob = ["test_*.py"]
