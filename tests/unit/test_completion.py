"""What completion keeps of a task's input in its records."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import PurePosixPath

from airflow_provider_cometflux.completion import recordable


def test_the_input_is_kept_as_given_made_json_safe():
    kept = recordable({"prompt": "a fox", "seed": 7, "image": PurePosixPath("/data/fox.png")})
    assert kept == {"prompt": "a fox", "seed": 7, "image": "/data/fox.png"}
    assert json.loads(json.dumps(kept)) == kept


def test_an_inline_image_is_kept_as_its_size_and_digest_only():
    raw = b"\x89PNG fox"
    uri = "data:image/png;base64," + base64.b64encode(raw).decode()
    kept = recordable({"prompt": "a fox", "image_prompt": uri})
    assert kept["image_prompt"] == {"data_uri": True, "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
