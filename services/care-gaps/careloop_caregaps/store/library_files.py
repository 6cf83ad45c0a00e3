"""Read the measure library from its JSON files.

The package ships `careloop_caregaps/measures/`: `library.json` lists the measures in
library order, one `<measure-id>.json` per measure and one `value_sets/<id>.json` per
value set. A measure file the index does not list, or an index entry without a file, is
an error: a library is released as a whole.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from careloop_caregaps.domain.library import MeasureLibrary, MeasureLibraryError, parse_library

DEFAULT_DIRECTORY = Path(__file__).resolve().parent.parent / "measures"
INDEX_FILE = "library.json"


def _read(path: Path, base: Path) -> tuple[str, Any]:
    name = str(path.relative_to(base))
    try:
        return name, json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MeasureLibraryError(name, "(file)", f"cannot be read as JSON: {exc}") from exc


def load_library(directory: Path | None = None) -> MeasureLibrary:
    """Parse the measure library in `directory` (the package's measures by default)."""
    base = directory or DEFAULT_DIRECTORY
    index_name, index = _read(base / INDEX_FILE, base)
    listed = index.get("measures") if isinstance(index, dict) else None
    if not isinstance(listed, list) or not all(isinstance(m, str) for m in listed):
        raise MeasureLibraryError(index_name, "measures", "must be a list of measure ids")
    present = {p.stem for p in base.glob("*.json") if p.name != INDEX_FILE}
    unlisted = sorted(present - set(listed))
    if unlisted:
        raise MeasureLibraryError(index_name, "measures", f"does not list {', '.join(unlisted)}")
    missing = [m for m in listed if m not in present]
    if missing:
        raise MeasureLibraryError(index_name, "measures", f"no file for {', '.join(missing)}")
    measures = dict(_read(base / f"{m}.json", base) for m in listed)
    value_sets = dict(_read(p, base) for p in sorted((base / "value_sets").glob("*.json")))
    for name, doc in measures.items():
        if isinstance(doc, dict) and doc.get("id") != Path(name).stem:
            raise MeasureLibraryError(name, "id", "must match the file name")
    for name, doc in value_sets.items():
        if isinstance(doc, dict) and doc.get("id") != Path(name).stem:
            raise MeasureLibraryError(name, "id", "must match the file name")
    return parse_library(measures, value_sets)
