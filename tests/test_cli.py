"""The `chorus` command table: core commands plus the verbs experiment modules declare."""

import os

import pytest

from chorus import cli


def _write(folder, name, text):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "w") as f:
        f.write(text)


@pytest.fixture
def modes_package(tmp_path, monkeypatch):
    """A throwaway experiments-like package on sys.path."""
    root = tmp_path / "fake_modes"
    _write(root, "__init__.py", "")
    monkeypatch.syspath_prepend(str(tmp_path))
    return root


def test_modes_contribute_commands_without_being_imported(modes_package):
    _write(modes_package, "speak.py",
           'raise RuntimeError("importing the module is not needed to list its verbs")\n'
           'COMMANDS = {"speak": ("fake_modes.speak:main", "say things")}\n')
    _write(modes_package / "listen", "__init__.py",
           'COMMANDS: dict = {"listen": ("fake_modes.listen.cli:main", "hear things")}\n')
    _write(modes_package, "quiet.py", "X = 1\n")
    table = cli.mode_commands("fake_modes")
    assert table == {"speak": ("fake_modes.speak:main", "say things"),
                     "listen": ("fake_modes.listen.cli:main", "hear things")}


def test_a_clash_or_a_malformed_table_names_the_file(modes_package):
    _write(modes_package, "a.py", 'COMMANDS = {"train": ("fake_modes.a:main", "x")}\n')
    with pytest.raises(cli.CommandTableError, match=r"a.py: command 'train' is already "
                                                    r"defined by the core commands"):
        cli.mode_commands("fake_modes")
    os.remove(modes_package / "a.py")
    _write(modes_package, "b.py", 'COMMANDS = {"go": "fake_modes.b:main"}\n')
    with pytest.raises(cli.CommandTableError, match=r"b.py: COMMANDS\['go'\]: expected "):
        cli.mode_commands("fake_modes")
    os.remove(modes_package / "b.py")
    _write(modes_package, "c.py", 'COMMANDS = {"go": ("fake_modes.c:main", "x")}\n')
    _write(modes_package, "d.py", 'COMMANDS = {"go": ("fake_modes.d:main", "y")}\n')
    with pytest.raises(cli.CommandTableError, match=r"d.py: command 'go' is already defined "
                                                    r"by fake_modes.c"):
        cli.mode_commands("fake_modes")


def test_help_lists_core_and_mode_commands(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("train", "rl", "data", "transcribe"):
        assert f"  {name} " in out
    assert cli.main(["no-such-verb"]) == 2
    assert "unknown command 'no-such-verb'" in capsys.readouterr().err


@pytest.mark.parametrize("broken", ["def speak(:\n    pass\n",  # a syntax error
                                    'COMMANDS = {"go": make_table()}\n'])  # not a literal
def test_a_broken_mode_cannot_break_a_core_command(modes_package, monkeypatch, capsys, broken):
    _write(modes_package, "broken.py", broken)
    monkeypatch.setattr(cli, "MODES_PACKAGE", "fake_modes")
    with pytest.raises(cli.CommandTableError, match=r"broken.py: "):
        cli.mode_commands()
    # A core verb dispatches without reading the modes' tables.
    assert cli.main(["bench", "--help"]) == 0
    assert "usage: chorus bench NAME" in capsys.readouterr().out
    # Help and every other verb read them, and report the broken file.
    for argv in (["--help"], ["speak"]):
        assert cli.main(argv) == 2
        assert "broken.py: " in capsys.readouterr().err


def test_a_syntax_error_is_reported_naming_the_file(modes_package):
    _write(modes_package, "ok.py", 'COMMANDS = {"go": ("fake_modes.ok:main", "x")}\n')
    _write(modes_package, "typo.py", 'X = 1\nCOMMANDS = {"say": ("fake_modes.typo:main" "x")\n')
    with pytest.raises(cli.CommandTableError,
                       match=r"typo.py: line \d+: cannot read COMMANDS, the module does not "
                             r"parse: "):
        cli.mode_commands("fake_modes")
