"""hvtui's tests, laid out like the package (tests/core/<domain>/, tests/tui/, tests/cli/); shared helpers are
modules of tests.helpers, shared fixtures live in tests/conftest.py. The folders are packages so pytest imports
every test by its full name (two folders may hold test files of the same name) with the repo root on sys.path."""
