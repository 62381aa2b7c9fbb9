"""Print the project's dependencies from pyproject.toml, one per line, for pip install -r.

Used by the Dockerfile so dependencies install in their own cached layer before the sources are
copied: serving images take the base dependencies (no TensorFlow), the trainer adds the ``train``
extra, and the GPU image leaves out ``tensorflow-cpu`` (the base image's TensorFlow serves):

    python requirements.py pyproject.toml --extra train --without tensorflow-cpu > requirements.txt
"""

import argparse
import re
import tomllib


def requirements(pyproject: str, without: list[str], extras: list[str] = ()) -> list[str]:
    with open(pyproject, "rb") as file:
        project = tomllib.load(file)["project"]
    dependencies = project["dependencies"] + [d for extra in extras for d in project["optional-dependencies"][extra]]
    left_out = {name.lower() for name in without}
    return [dep for dep in dependencies if re.split(r"[\s<>=!~;\[]", dep, maxsplit=1)[0].lower() not in left_out]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("pyproject")
    parser.add_argument("--without", action="append", default=[], metavar="NAME", help="leave this package out")
    parser.add_argument("--extra", action="append", default=[], metavar="NAME", help="add this extra's packages")
    args = parser.parse_args()
    print("\n".join(requirements(args.pyproject, args.without, args.extra)))
