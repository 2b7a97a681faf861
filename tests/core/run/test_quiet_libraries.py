"""What the headless console keeps from the libraries' own warnings."""
import warnings


def test_a_librarys_docstring_escapes_do_not_reach_the_console():
    """torchao's quant_api has an invalid escape sequence in a docstring; Python 3.12+ warns when it compiles
    the file without a .pyc (pip --no-compile): that is the library's to fix, not the user's."""
    from hvtui.core.run.headless import quiet_libraries

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
