"""The guards every built-in job shares: names a payload may use, file roots, files created only when new."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import jobkit
import jobkit.jobs
from jobkit.jobs._paths import create_new, inside_roots
from jobkit.jobs._registry import Registry


class Refused(Exception):
    pass


class Thing:
    pass


class Other:
    pass


def test_registry_finds_registered_objects_by_name_and_import_path() -> None:
    things: Registry[type] = Registry("widget", "my.register_widget(cls)", Refused)
    things.add(Thing)
    things.add(Other, "special")
    assert things.get("Thing") is Thing and things.get("special") is Other
    assert things.get(f"{__name__}:Thing") is Thing and things.get(f"{__name__}.Thing") is Thing
    assert things.get(f"{__name__}:Other") is Other
    assert things.names() == ["Thing", "special"]


def test_registry_refuses_what_was_not_registered_and_says_what_was() -> None:
    things: Registry[type] = Registry("widget", "my.register_widget(cls)", Refused)
    things.add(Thing)
    with pytest.raises(Refused) as info:
        things.get("os:system")
    message = str(info.value)
    assert "widget 'os:system' is not registered" in message
    assert "registered: Thing" in message and "my.register_widget(cls)" in message
    with pytest.raises(Refused, match="registered: none"):
        Registry("gadget", "x", Refused).get("Anything")
    with pytest.raises(Refused) as long_ref:
        things.get("x" * 5000)
    assert len(str(long_ref.value)) < 400  # a huge payload string is not echoed whole


def test_the_same_class_defined_again_replaces_itself() -> None:
    """A notebook cell run twice defines the class again: the new one wins."""
    things: Registry[type] = Registry("widget", "x", Refused)
    things.add(Thing)
    again = type("Thing", (), {"__module__": __name__, "__qualname__": "Thing"})
    things.add(again)
    assert things.get("Thing") is again and things.get(f"{__name__}:Thing") is again


def test_another_class_under_a_taken_name_is_refused() -> None:
    things: Registry[type] = Registry("widget", "x", Refused)
    things.add(Thing)
    impostor = type("Thing", (), {"__module__": "elsewhere", "__qualname__": "Thing"})
    with pytest.raises(jobkit.ConfigError) as info:
        things.add(impostor)
    assert f"widget name 'Thing' is already taken by {__name__}:Thing" in str(info.value)
    assert "elsewhere:Thing under a name of its own" in str(info.value)
    assert things.get("Thing") is Thing
    things.add(impostor, "OtherThing")
    assert things.get("OtherThing") is impostor and things.get("elsewhere:Thing") is impostor


# -- file roots ---------------------------------------------------------------------------------------------------

@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    inside, outside = tmp_path / "root", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    jobkit.jobs.configure(file_roots=[inside])
    return inside.resolve(), outside.resolve()


def test_paths_inside_a_root_resolve_relative_to_the_first_root(roots: tuple[Path, Path]) -> None:
    inside, _ = roots
    (inside / "sub").mkdir()
    assert inside_roots("a.xlsx", "path", Refused) == inside / "a.xlsx"
    assert inside_roots("sub/../a.xlsx", "path", Refused) == inside / "a.xlsx"
    assert inside_roots(str(inside / "sub" / "b.db"), "path", Refused) == inside / "sub" / "b.db"


@pytest.mark.parametrize("escape", ["../outside/secret.txt", "../../etc/passwd", "/etc/passwd", "sub/../../x"])
def test_dot_dot_and_absolute_paths_outside_the_roots_are_refused(roots: tuple[Path, Path], escape: str) -> None:
    with pytest.raises(Refused) as info:
        inside_roots(escape, "path", Refused)
    assert "outside the file roots" in str(info.value) and "JOBKIT_FILE_ROOTS" in str(info.value)


def test_symlinks_leading_out_of_the_root_are_refused(roots: tuple[Path, Path]) -> None:
    inside, outside = roots
    (inside / "link.txt").symlink_to(outside / "secret.txt")
    (inside / "linkdir").symlink_to(outside)
    for path in ("link.txt", "linkdir/secret.txt", "linkdir/new.db", str(inside / "linkdir" / "x")):
        with pytest.raises(Refused, match="outside the file roots"):
            inside_roots(path, "path", Refused)
    (inside / "ok").symlink_to(inside)  # a link that stays inside is fine
    assert inside_roots("ok/a.xlsx", "path", Refused) == inside / "a.xlsx"


def test_nul_bytes_and_a_missing_root_are_refused(roots: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(Refused, match="NUL"):
        inside_roots("a\x00.xlsx", "path", Refused)
    jobkit.jobs.configure(file_roots=[tmp_path / "nowhere"])
    with pytest.raises(Refused, match="does not exist"):
        inside_roots("a.xlsx", "path", Refused)


def test_default_root_is_data_in_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JOBKIT_FILE_ROOTS", raising=False)
    jobkit.jobs.configure(file_roots=None)
    assert jobkit.jobs.file_roots() == [tmp_path.resolve() / "data"]
    with pytest.raises(Refused) as info:
        inside_roots("a.xlsx", "path", Refused)
    assert "does not exist" in str(info.value) and "data" in str(info.value)
    (tmp_path / "data").mkdir()
    assert inside_roots("a.xlsx", "path", Refused) == tmp_path.resolve() / "data" / "a.xlsx"
    with pytest.raises(Refused, match="outside the file roots"):
        inside_roots(str(tmp_path / "a.xlsx"), "path", Refused)


def test_roots_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    monkeypatch.setenv("JOBKIT_FILE_ROOTS", f"{a}{os.pathsep}{b}")
    jobkit.jobs.configure(file_roots=None)
    assert jobkit.jobs.file_roots() == [a.resolve(), b.resolve()]
    assert inside_roots(str(b / "x.xlsx"), "path", Refused) == b.resolve() / "x.xlsx"
    jobkit.jobs.configure(file_roots=[b])  # explicit configuration wins over the environment
    assert jobkit.jobs.file_roots() == [b.resolve()]


# -- files created only when new ----------------------------------------------------------------------------------

def test_create_new_writes_a_new_file(tmp_path: Path) -> None:
    target = tmp_path / "report.xlsx"
    create_new(target, lambda tmp: tmp.write_bytes(b"fresh"))
    assert target.read_bytes() == b"fresh"
    assert [p.name for p in tmp_path.iterdir()] == ["report.xlsx"]  # no temporary file left behind


def test_create_new_never_replaces_a_file_or_follows_a_link(tmp_path: Path) -> None:
    existing = tmp_path / "precious.xlsx"
    existing.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        create_new(existing, lambda tmp: tmp.write_bytes(b"overwritten"))
    assert existing.read_bytes() == b"keep me"
    victim = tmp_path / "victim"
    dangling = tmp_path / "dangling.xlsx"
    dangling.symlink_to(victim)
    with pytest.raises(FileExistsError):
        create_new(dangling, lambda tmp: tmp.write_bytes(b"through the link"))
    assert not victim.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.xlsx", "precious.xlsx"]
