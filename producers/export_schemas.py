"""Write the JSON Schema of every event contract into ``docs/schemas/``.

Run ``python -m producers.export_schemas``; a test fails when the files are stale.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from producers.contracts import json_schemas

OUT = Path(__file__).resolve().parent.parent / "docs" / "schemas"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for tag, schema in json_schemas().items():
        path = OUT / f"{tag.replace('/', '.')}.json"
        path.write_text(json.dumps(json.loads(msgspec.json.encode(schema)), indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
