"""LibreOffice Calc, headless, pulls a metric from kpitables through psqlODBC, as a finance
analyst's spreadsheet does; run with the Python that has LibreOffice's `uno` module
(/usr/bin/python3 with python3-uno).

    calc_check.py <odbc dsn> <user> <password> <sql> <output.ods>

Starts soffice with a throwaway profile, opens the ODBC data source through LibreOffice's
database layer (sdbc:odbc:<dsn>), runs the query, writes the header and rows into the first
sheet of a new Calc document, saves it as .ods and quits. tests/clients/test_libreoffice.py
reads the saved file and checks the numbers."""

import os
import subprocess
import sys
import tempfile
import time

import uno
from com.sun.star.beans import PropertyValue


def prop(name, value):
    p = PropertyValue()
    p.Name = name
    p.Value = value
    return p


def connect(pipe, soffice):
    local = uno.getComponentContext()
    resolver = local.ServiceManager.createInstanceWithContext("com.sun.star.bridge.UnoUrlResolver", local)
    deadline = time.time() + 120
    while True:
        try:
            return resolver.resolve(f"uno:pipe,name={pipe};urp;StarOffice.ComponentContext")
        except Exception:
            if time.time() > deadline or soffice.poll() is not None:
                raise
            time.sleep(0.5)


def main():
    dsn, user, password, sql, output = sys.argv[1:6]
    profile = tempfile.mkdtemp(prefix="kpitables-lo-")
    pipe = f"kpitables_{os.getpid()}"
    soffice = subprocess.Popen(
        [
            "soffice",
            "--headless",
            "--invisible",
            "--norestore",
            "--nologo",
            "--nodefault",
            f"-env:UserInstallation=file://{profile}",
            f"--accept=pipe,name={pipe};urp;StarOffice.ComponentContext",
        ]
    )
    try:
        ctx = connect(pipe, soffice)
        smgr = ctx.ServiceManager

        # The data source, as Base or Calc's data source browser opens it.
        databases = smgr.createInstanceWithContext("com.sun.star.sdb.DatabaseContext", ctx)
        source = databases.createInstance()
        source.URL = f"sdbc:odbc:{dsn}"
        connection = source.getConnection(user, password)
        result = connection.createStatement().executeQuery(sql)
        meta = result.getMetaData()
        columns = meta.getColumnCount()
        header = [meta.getColumnLabel(i) for i in range(1, columns + 1)]
        numeric = [meta.getColumnType(i) in (2, 3, 4, 5, -5, 6, 7, 8) for i in range(1, columns + 1)]
        rows = []
        while result.next():
            rows.append(
                [result.getDouble(i) if numeric[i - 1] else result.getString(i) for i in range(1, columns + 1)]
            )
        connection.close()

        desktop = smgr.createInstanceWithContext("com.sun.star.frame.Desktop", ctx)
        document = desktop.loadComponentFromURL("private:factory/scalc", "_blank", 0, (prop("Hidden", True),))
        sheet = document.Sheets.getByIndex(0)
        for c, name in enumerate(header):
            sheet.getCellByPosition(c, 0).setString(name)
        for r, row in enumerate(rows, start=1):
            for c, value in enumerate(row):
                cell = sheet.getCellByPosition(c, r)
                if numeric[c]:
                    cell.setValue(value)
                else:
                    cell.setString(value)
        document.storeToURL(uno.systemPathToFileUrl(os.path.abspath(output)), (prop("FilterName", "calc8"),))
        document.close(True)
        try:
            desktop.terminate()
        except Exception:
            pass  # the bridge goes away as soffice quits
    finally:
        try:
            soffice.wait(timeout=60)
        except subprocess.TimeoutExpired:
            soffice.kill()


if __name__ == "__main__":
    main()
