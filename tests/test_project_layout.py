"""The README documents every setting and the two commands; CI calls the README's test command."""

from __future__ import annotations

from pathlib import Path

from driftstream.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [n for n in Settings.model_fields if f"DRIFTSTREAM_{n.upper()}" not in readme]
    assert not missing, f"settings not in README: {missing} (python -m driftstream.settings)"


def test_readme_gives_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_layout() -> None:
    for d in ["producers", "stream_apps", "batch", "serving", "infra", "tests", "docs", "benchmarks"]:
        assert (ROOT / d).is_dir(), d
    for f in ["pyproject.toml", "constraints.txt", "Makefile", "README.md", "infra/kafka/pom.xml"]:
        assert (ROOT / f).is_file(), f
