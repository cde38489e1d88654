"""Write one N-way K-shot Omniglot task as image folders, for trying ``lit-meta adapt``.

    python scripts/omniglot_task.py ../shared/data/omniglot/images_background_small2.zip Sanskrit /tmp/sanskrit20

writes ``OUT/support/<character>/<image>`` (the first ``shots`` drawings of each of the alphabet's
first ``ways`` characters) and ``OUT/query/<character>/<image>`` (the other drawings).
"""

from __future__ import annotations

import argparse
import os
import zipfile
from collections import defaultdict


def write_task(archive: str, alphabet: str, out: str, ways: int = 20, shots: int = 1) -> tuple[int, int]:
    """Returns the numbers of support and query images written."""
    drawings: dict[str, list[str]] = defaultdict(list)
    with zipfile.ZipFile(archive) as zf:
        for name in sorted(zf.namelist()):
            parts = name.split("/")
            if len(parts) == 4 and parts[1] == alphabet and name.endswith(".png"):
                drawings[parts[2]].append(name)
        characters = sorted(drawings)[:ways]
        if len(characters) < ways:
            raise ValueError(
                f"Expected >= {ways} characters in alphabet {alphabet!r} of {archive!r}, but got {len(characters)}."
            )
        counts = [0, 0]
        for character in characters:
            for i, name in enumerate(drawings[character]):
                part = "support" if i < shots else "query"
                folder = os.path.join(out, part, character)
                os.makedirs(folder, exist_ok=True)
                with open(os.path.join(folder, os.path.basename(name)), "wb") as f:
                    f.write(zf.read(name))
                counts[part == "query"] += 1
    return counts[0], counts[1]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("archive")
    parser.add_argument("alphabet")
    parser.add_argument("out")
    parser.add_argument("--ways", type=int, default=20)
    parser.add_argument("--shots", type=int, default=1)
    options = parser.parse_args()
    support, query = write_task(options.archive, options.alphabet, options.out, options.ways, options.shots)
    print(f"{support} support and {query} query images in {options.out}")
