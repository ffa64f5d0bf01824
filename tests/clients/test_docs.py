"""The SQL examples of README.md and docs/model-reference.md run on the demo model."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def sql_examples():
    for doc in ["README.md", "docs/model-reference.md"]:
        text = (ROOT / doc).read_text()
        for block in re.findall(r"```sql\n(.*?)```", text, re.S):
            for statement in block.split(";\n"):
                statement = statement.strip().rstrip(";")
                if statement:
                    yield doc, statement


EXAMPLES = list(sql_examples())


def test_docs_have_sql_examples():
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("doc,statement", EXAMPLES, ids=[f"{d}: {s[:50]}" for d, s in EXAMPLES])
def test_sql_example_runs(conn, doc, statement):
    rows = conn.execute(statement).fetchall()
    assert rows, f"{doc}: no rows from {statement}"
