"""Run keys and the results folder: one JSON per finished run, written atomically.

A run's key hashes what decides its result: the resolved config (paths under the study
folder and the data root replaced by placeholders, so the key is the same on every machine),
the generated data's arguments and the study tag. A changed config gives a new key and so a
new run; a finished run is skipped because its JSON exists.
"""
import hashlib
import json
import os
import os.path as osp
import tempfile
from typing import Any, Dict, Iterable, List, Mapping

#: Bump when what a run measures changes, so every key changes.
PROTOCOL = 1


def canonical_json(obj: Any) -> str:
    """Sorted, compact JSON; tuples as lists, anything else JSON does not know as ``str``."""
    return json.dumps(obj, sort_keys=True, separators=(',', ':'), default=str)


def run_key(payload: Mapping) -> str:
    """16 hex digits of the SHA-1 of ``payload`` (with :data:`PROTOCOL`) as canonical JSON.

    Args:
        payload: Everything that decides the run's result.
    """
    text = canonical_json(dict(payload, protocol=PROTOCOL))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def replace_prefixes(obj: Any, mapping: Mapping[str, str]) -> Any:
    """A copy of ``obj`` where every string starting with a key of ``mapping`` starts with
    its value instead (longest key first).

    Args:
        obj: Nested dicts, lists and tuples.
        mapping: ``{old prefix: new prefix}``.
    """
    order = sorted(mapping, key=len, reverse=True)

    def walk(x):
        if isinstance(x, str):
            for old in order:
                if old and x.startswith(old):
                    return mapping[old] + x[len(old):]
            return x
        if isinstance(x, Mapping):
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(walk(v) for v in x)
        return x

    return walk(obj)


def write_json_atomic(path: str, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file in the same folder and
    ``os.replace``: a reader (or a resumed study) sees the old file or the whole new one.

    Args:
        path: Destination.
        obj: JSON-serialisable (anything else is written as ``str``).
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.tmp-', suffix='.json', dir=folder)
    try:
        with os.fdopen(fd, 'w') as f:
            json.dump(obj, f, indent=1, sort_keys=True, default=str)
            f.write('\n')
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


class ResultStore:
    """The ``results/`` folder of a study: ``<key>.json`` per finished run.

    Args:
        root: The folder (created on the first write).
    """

    def __init__(self, root: str) -> None:
        self.root = root

    def path(self, key: str) -> str:
        return osp.join(self.root, f'{key}.json')

    def has(self, key: str) -> bool:
        return osp.exists(self.path(key))

    def load(self, key: str) -> dict:
        with open(self.path(key)) as f:
            return json.load(f)

    def write(self, record: dict) -> str:
        """Write a finished run's record (it must carry its ``key``); return the path."""
        path = self.path(record['key'])
        write_json_atomic(path, record)
        return path

    def records(self, keys: Iterable[str] = None) -> List[dict]:
        """The records of ``keys`` that exist, or every record in the folder.

        Raises:
            ValueError: If a JSON file in the folder cannot be read (naming it).
        """
        if keys is not None:
            return [self.load(k) for k in keys if self.has(k)]
        if not osp.isdir(self.root):
            return []
        out = []
        for name in sorted(os.listdir(self.root)):
            if not name.endswith('.json') or name.startswith('.'):
                continue
            try:
                with open(osp.join(self.root, name)) as f:
                    out.append(json.load(f))
            except ValueError as e:
                raise ValueError(f'{osp.join(self.root, name)} is not valid JSON ({e}); '
                                 'delete it to rerun that run') from e
        return out


def load_merged(path: str) -> Dict[str, Any]:
    """Read a merged study JSON (``study.json``): ``{'study': ..., 'records': [...]}``.

    Raises:
        ValueError: If the file is not one.
    """
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get('records'), list) or \
            not isinstance(data.get('study'), dict):
        raise ValueError(f'{path} is not a merged study JSON (a dict with "study" and '
                         '"records", as peft_study.py writes to <work-dir>/study.json)')
    return data
