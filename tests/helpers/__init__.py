"""Test helpers: datasets, model trees, presets, fake backends and readers the tests share (imported as
`from tests.helpers import loop_presets as L`)."""
