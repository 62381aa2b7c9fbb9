"""Print the project's runtime dependencies from pyproject.toml, one per line, for pip install -r.

Used by the Dockerfile so dependencies install in their own cached layer before the sources are
copied, and by the GPU image to leave out ``tensorflow-cpu`` (the base image's TensorFlow serves):

    python requirements.py pyproject.toml --without tensorflow-cpu > requirements.txt
"""

import argparse
import re
import tomllib


def requirements(pyproject: str, without: list[str]) -> list[str]:
    with open(pyproject, "rb") as file:
        dependencies = tomllib.load(file)["project"]["dependencies"]
    left_out = {name.lower() for name in without}
    return [dep for dep in dependencies if re.split(r"[\s<>=!~;\[]", dep, maxsplit=1)[0].lower() not in left_out]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("pyproject")
    parser.add_argument("--without", action="append", default=[], metavar="NAME", help="leave this package out")
    args = parser.parse_args()
    print("\n".join(requirements(args.pyproject, args.without)))
