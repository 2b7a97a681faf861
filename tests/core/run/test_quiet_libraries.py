"""What the headless console keeps from the libraries' own warnings."""
import logging
import warnings


def test_a_librarys_docstring_escapes_do_not_reach_the_console(monkeypatch):
    """torchao's quant_api has an invalid escape sequence in a docstring; Python 3.12+ warns when it compiles
    the file without a .pyc (pip --no-compile): that is the library's to fix, not the user's."""
    from hvtui.core.run.headless import quiet_libraries

    for name in ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY"):   # put back after the test
        monkeypatch.setenv(name, "warning")
    for name in ("torchao", "torch.utils._pytree"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.getLogger(name).level)
    source = 'def f():\n    "a pattern: \\."\n'
    with warnings.catch_warnings(record=True) as seen:   # restores the filters afterwards
        warnings.simplefilter("always")
        compile(source, "quant_api.py", "exec")
        assert any(issubclass(w.category, (SyntaxWarning, DeprecationWarning)) for w in seen)   # what users saw
        seen.clear()
        quiet_libraries()
        compile(source, "quant_api.py", "exec")
        warnings.warn("hvtui's own", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["hvtui's own"]
    # Python 3.14's wording of the same warning
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_libraries()
        warnings.warn('"\\." is an invalid escape sequence. Such sequences will not work in the future.',
                      SyntaxWarning, stacklevel=1)
    assert seen == []
