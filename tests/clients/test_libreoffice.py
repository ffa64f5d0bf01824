"""LibreOffice Calc, headless, through psqlODBC (both installed by tests/run-all.sh): a
script opens the ODBC data source, runs a metric query, writes the result into a sheet
and saves it (tests/clients/libreoffice/calc_check.py). This test reads the saved .ods
file and compares its numbers with DuckDB on the same files."""

import os
import pathlib
import subprocess
import xml.etree.ElementTree as ET
import zipfile

from test_ground_truth import LINES, REVENUE, assert_rows_equal

CHECK = pathlib.Path(__file__).resolve().parent / "libreoffice" / "calc_check.py"
NS = {
    "table": "urn:oasis:names:tc:opendocument:xmlns:table:1.0",
    "office": "urn:oasis:names:tc:opendocument:xmlns:office:1.0",
    "text": "urn:oasis:names:tc:opendocument:xmlns:text:1.0",
}


def sheet_rows(ods: pathlib.Path):
    """The first sheet's rows as saved: numbers as floats, text as strings."""
    root = ET.fromstring(zipfile.ZipFile(ods).read("content.xml"))
    table = root.find(".//table:table", NS)
    rows = []
    for row in table.findall("table:table-row", NS):
        values = []
        for cell in row.findall("table:table-cell", NS):
            repeat = int(cell.get(f"{{{NS['table']}}}number-columns-repeated", "1"))
            kind = cell.get(f"{{{NS['office']}}}value-type")
            if kind == "float":
                value = float(cell.get(f"{{{NS['office']}}}value"))
            elif kind == "string":
                value = "".join(p.text or "" for p in cell.findall("text:p", NS))
            else:
                value = None
            values.extend([value] * min(repeat, 64))
        while values and values[-1] is None:
            values.pop()
        if values:
            rows.append(values)
    return rows


def test_calc_pulls_a_metric_through_odbc(server, duck, tmp_path):
    odbc_ini = tmp_path / "odbc.ini"
    odbc_ini.write_text(
        "[kpitables]\n"
        "Driver = PostgreSQL Unicode\n"
        f"Servername = {server['host']}\n"
        f"Port = {server['port']}\n"
        f"Database = {server['dbname']}\n"
        f"Username = {server['user']}\n"
        f"Password = {server['password']}\n"
    )
    output = tmp_path / "revenue.ods"
    done = subprocess.run(
        [
            "/usr/bin/python3",
            str(CHECK),
            "kpitables",
            server["user"],
            server["password"],
            "SELECT region, revenue, orders FROM sales ORDER BY region",
            str(output),
        ],
        env={**os.environ, "ODBCINI": str(odbc_ini), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = sheet_rows(output)
    assert rows[0] == ["region", "revenue", "orders"]
    expected = duck.execute(
        f"""SELECT s.region, {REVENUE},
                   COUNT(DISTINCT CASE WHEN o.status <> 'cancelled' THEN l.order_id END)
            FROM {LINES} GROUP BY 1 ORDER BY 1"""
    ).fetchall()
    assert len(expected) > 1
    assert_rows_equal([tuple(r) for r in rows[1:]], expected)
