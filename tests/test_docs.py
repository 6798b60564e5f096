"""The README's generated tables match the registry and the config keys."""
from vcd import docs
from vcd.config import example_text
from vcdtest import REPO


def test_readme_method_and_config_tables_are_current():
    assert docs.main(["--check"]) == 0, "run: .venv/bin/python -m vcd.docs"


def test_example_config_documents_every_key():
    assert (REPO / "vcd.conf.example").read_text() == example_text() + "\n" or \
        (REPO / "vcd.conf.example").read_text() == example_text()
