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
    """An example runs and returns rows; one after a `-- refused: <reason>` line is refused
    with 0A000 and a message that gives the reason."""
    import psycopg

    first, _, rest = statement.partition("\n")
    if first.startswith("-- refused:"):
        reason = first.removeprefix("-- refused:").strip()
        with pytest.raises(psycopg.Error) as e:
            conn.execute(rest)
        assert e.value.sqlstate == "0A000", f"{doc}: {rest}"
        assert reason in e.value.diag.message_primary, e.value.diag.message_primary
        return
    rows = conn.execute(statement).fetchall()
    assert rows, f"{doc}: no rows from {statement}"
