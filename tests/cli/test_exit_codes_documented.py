"""Exit codes are an interface: every code hvtui defines is in the README's table and in `hvtui --help`."""
import re

from hvtui.cli import EPILOG
from hvtui.core.run import exitcodes
from tests.helpers.repo_paths import README


def test_every_exit_code_is_in_the_readme_table_and_the_help():
    codes = {v for k, v in vars(exitcodes).items() if k.isupper() and isinstance(v, int)}
    table = README.read_text().split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(c) for row in re.findall(r"^\| ([\d / ]+) \|", table, re.M) for c in row.split("/")}
    assert codes <= documented, codes - documented   # (the CLI adds codes of its own, e.g. a closed pipe)
    assert all(re.search(rf"\b{c}\b", EPILOG) for c in codes)
