"""LibreOffice Calc, headless, through psqlODBC (both installed by tests/run-all.sh), run by
tests/clients/libreoffice/calc_check.py: a metric query written into a sheet, and Calc's own
import of a whole view (Data > Import, or a view dragged from the data source browser) with
the documented data source setting `UpdatableCursors = 0`. This test reads each saved .ods
file and compares its cells with DuckDB on the same files."""

import datetime
import os
import pathlib
import subprocess
import xml.etree.ElementTree as ET
import zipfile

from test_ground_truth import LINES, OK, REVENUE, as_doubles, assert_rows_equal

CHECK = pathlib.Path(__file__).resolve().parent / "libreoffice" / "calc_check.py"
NS = {
    "table": "urn:oasis:names:tc:opendocument:xmlns:table:1.0",
    "office": "urn:oasis:names:tc:opendocument:xmlns:office:1.0",
    "text": "urn:oasis:names:tc:opendocument:xmlns:text:1.0",
}


def sheet_rows(ods: pathlib.Path):
    """The first sheet's rows as saved: numbers as floats, dates as dates, text as strings,
    empty cells as None."""
    root = ET.fromstring(zipfile.ZipFile(ods).read("content.xml"))
    table = root.find(".//table:table", NS)
    rows = []
    for row in table.findall("table:table-row", NS):
        values = []
        for cell in row.findall("table:table-cell", NS):
            repeat = int(cell.get(f"{{{NS['table']}}}number-columns-repeated", "1"))
            kind = cell.get(f"{{{NS['office']}}}value-type")
            if kind in ("float", "currency", "percentage"):
                value = float(cell.get(f"{{{NS['office']}}}value"))
            elif kind == "date":
                value = datetime.date.fromisoformat(cell.get(f"{{{NS['office']}}}date-value")[:10])
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


def run_calc(server, tmp_path, mode, what, dsn_settings=""):
    """Runs calc_check.py against a psqlODBC data source for the server; the saved sheet's rows."""
    odbc_ini = tmp_path / "odbc.ini"
    odbc_ini.write_text(
        "[kpitables]\n"
        "Driver = PostgreSQL Unicode\n"
        f"Servername = {server['host']}\n"
        f"Port = {server['port']}\n"
        f"Database = {server['dbname']}\n"
        f"Username = {server['user']}\n"
        f"Password = {server['password']}\n" + dsn_settings
    )
    output = tmp_path / "sheet.ods"
    done = subprocess.run(
        ["/usr/bin/python3", str(CHECK), mode, "kpitables", server["user"], server["password"], what, str(output)],
        env={**os.environ, "ODBCINI": str(odbc_ini), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return sheet_rows(output)


def test_calc_pulls_a_metric_through_odbc(server, duck, tmp_path):
    rows = run_calc(server, tmp_path, "query", "SELECT region, revenue, orders FROM sales ORDER BY region")
    assert rows[0] == ["region", "revenue", "orders"]
    expected = duck.execute(
        f"""SELECT s.region, {REVENUE},
                   COUNT(DISTINCT CASE WHEN o.status <> 'cancelled' THEN l.order_id END)
            FROM {LINES} GROUP BY 1 ORDER BY 1"""
    ).fetchall()
    assert len(expected) > 1
    assert_rows_equal([tuple(r) for r in rows[1:]], as_doubles(expected))


def test_calc_imports_a_whole_view(server, duck, tmp_path):
    """Data > Import of the view sales_targets: every column of the view at its finest grain
    (day × region), as `SELECT *` answers it. psqlODBC's default updatable cursors ask for
    `ctid`, which a PostgreSQL view does not have either (the import then stays empty, on
    PostgreSQL too), so the data source sets `UpdatableCursors = 0` as docs/clients.md says."""
    rows = run_calc(server, tmp_path, "import", "sales_targets", "UpdatableCursors = 0\n")
    assert rows[0] == [
        "order_date", "order_date__week", "order_date__month", "order_date__quarter", "order_date__year",
        "region", "revenue", "revenue_target", "revenue_attainment", "revenue_ytd",
    ]
    # Daily revenue per region; the monthly target lands on the first day of its month; the
    # year-to-date revenue runs over the days of each region's year.
    expected = duck.execute(
        f"""WITH d AS (SELECT o.order_date AS day, s.region,
                              SUM(CASE WHEN {OK} THEN l.quantity * l.unit_price - l.discount END) AS r
                       FROM {LINES} GROUP BY 1, 2)
            SELECT d.day, CAST(date_trunc('week', d.day) AS DATE), CAST(date_trunc('month', d.day) AS DATE),
                   CAST(date_trunc('quarter', d.day) AS DATE), CAST(date_trunc('year', d.day) AS DATE),
                   d.region, d.r, t.revenue_target, CAST(d.r AS DOUBLE) / CAST(t.revenue_target AS DOUBLE),
                   SUM(d.r) OVER (PARTITION BY d.region, year(d.day) ORDER BY d.day)
            FROM d LEFT JOIN revenue_targets t ON t.month = d.day AND t.region = d.region
            ORDER BY 1, 6"""
    ).fetchall()
    assert len(expected) > 1000
    ours = sorted((tuple(r) for r in rows[1:]), key=lambda r: (r[0], r[5]))
    # Calc's import reads the double precision column through a single-precision value
    # (0.037529917912635595 from the server arrives as 0.0375299192965031, as psql shows
    # the server's): compared to a float's precision, 2^-23.
    assert_rows_equal(ours, as_doubles(expected), float_tol=2**-23)
