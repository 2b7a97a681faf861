"""The preset: its typed schema and loading (schema.py), `hvtui check` (check.py entry points, with problems.py,
check_fields.py, check_rules.py, check_bounds.py), key line numbers for messages (toml_positions.py), editing with
comments kept (edit.py) and the SimpleTuner import (simpletuner_import.py). Stdlib and tomlkit only: no torch."""
