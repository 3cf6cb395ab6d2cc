"""docs/finance.md's demo figures live in one generated block; the generator replaces only it."""

from __future__ import annotations

import pytest

from usage_etl.finance_example import BEGIN, END, replace_block
from usage_etl.settings import REPO_ROOT


def test_finance_md_has_exactly_one_generated_block():
    text = (REPO_ROOT / "docs" / "finance.md").read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert "$ usage-etl invoices --period 2026-10 --account globex" in block


def test_replace_block_changes_only_the_block():
    text = f"# Title\nbefore\n{BEGIN}\nold figures\n{END}\nafter\n"
    new = replace_block(text, "    $ usage-etl invoices\n    new figures\n")
    block = "    $ usage-etl invoices\n    new figures"
    assert new == f"# Title\nbefore\n{BEGIN}\n\n{block}\n\n{END}\nafter\n"
    assert replace_block(new, "    again") == replace_block(text, "    again")  # idempotent


@pytest.mark.parametrize("text", ["no markers", f"{END}\n{BEGIN}", f"{BEGIN}{BEGIN}{END}"])
def test_replace_block_refuses_missing_or_broken_markers(text):
    with pytest.raises(ValueError):
        replace_block(text, "x")
