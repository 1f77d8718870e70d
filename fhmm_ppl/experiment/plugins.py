"""Importing user modules named in an experiment (e.g. to register new priors)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_LOADED: dict[str, object] = {}


def load_plugins(paths: list[str]) -> None:
    """Import each Python file once (by resolved path); errors name the file in one line."""
    for raw in paths:
        path = Path(raw).resolve()
        key = str(path)
        if key in _LOADED:
            continue
        if not path.is_file():
            raise ValueError(f"plugin {raw}: no such Python file")
        name = f"fhmm_ppl_plugin_{path.stem}_{abs(hash(key)) % 10**8}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[name]
            raise ValueError(f"plugin {raw}: import failed ({type(err).__name__}: {err})") from None
        _LOADED[key] = module
