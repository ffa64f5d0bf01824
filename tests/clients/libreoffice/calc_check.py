"""LibreOffice Calc, headless, pulls metrics from kpitables through psqlODBC, as a finance
analyst's spreadsheet does; run with the Python that has LibreOffice's `uno` module
(/usr/bin/python3 with python3-uno).

    calc_check.py query <odbc dsn> <user> <password> <sql> <output.ods>
    calc_check.py import <odbc dsn> <user> <password> <view> <output.ods>

Starts soffice with a throwaway profile and opens the ODBC data source through LibreOffice's
database layer (sdbc:odbc:<dsn>).

- `query` runs the SQL and writes the header and rows into the first sheet itself.
- `import` does what a user does with Data > Import or by dragging a view from the data
  source browser (F4) onto a sheet: the data source is registered (an .odb file, as Base
  writes it) and Calc's own database import (`XDatabaseRange.doImport` with the view as a
  TABLE source) reads the whole view into the sheet. The view is named as LibreOffice lists
  it (catalog.schema.name).

Either way the document is saved as .ods and soffice quits; tests/clients/test_libreoffice.py
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


def query_into(smgr, ctx, source, user, password, sql, document):
    """Runs the SQL on a connection of the data source and writes the rows into the sheet."""
    connection = source.getConnection(user, password)
    result = connection.createStatement().executeQuery(sql)
    meta = result.getMetaData()
    columns = meta.getColumnCount()
    header = [meta.getColumnLabel(i) for i in range(1, columns + 1)]
    numeric = [meta.getColumnType(i) in (2, 3, 4, 5, -5, 6, 7, 8) for i in range(1, columns + 1)]
    rows = []
    while result.next():
        rows.append([result.getDouble(i) if numeric[i - 1] else result.getString(i) for i in range(1, columns + 1)])
    connection.close()
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


def import_into(smgr, ctx, source, user, password, view, profile, document):
    """Calc's own import of a whole view, as Data > Import does it."""
    source.User = user
    source.Password = password
    odb = os.path.join(profile, "kpitables.odb")
    source.DatabaseDocument.storeAsURL(uno.systemPathToFileUrl(odb), ())
    databases = smgr.createInstanceWithContext("com.sun.star.sdb.DatabaseContext", ctx)
    databases.registerObject("kpitables", source)
    # The view as the data source browser lists it.
    connection = source.getConnection(user, password)
    names = connection.getTables().getElementNames()
    connection.close()
    listed = [n for n in names if n.split(".")[-1] == view]
    if len(listed) != 1:
        raise SystemExit(f"view {view!r} is not listed once by the data source: {names}")
    sheet = document.Sheets.getByIndex(0)
    target = sheet.getCellRangeByName("A1")
    descriptor = []
    for p in target.createImportDescriptor(True):
        if p.Name == "DatabaseName":
            p.Value = "kpitables"
        elif p.Name == "SourceType":
            p.Value = uno.Enum("com.sun.star.sheet.DataImportMode", "TABLE")
        elif p.Name == "SourceObject":
            p.Value = listed[0]
        descriptor.append(p)
    target.doImport(tuple(descriptor))
    # Calc reports a failed import in a dialog, which headless soffice does not show: an
    # empty sheet is the failure.
    if not sheet.getCellByPosition(0, 0).getString():
        raise SystemExit(f"the import of {listed[0]} left the sheet empty")


def main():
    mode, dsn, user, password, what, output = sys.argv[1:7]
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
        desktop = smgr.createInstanceWithContext("com.sun.star.frame.Desktop", ctx)
        document = desktop.loadComponentFromURL("private:factory/scalc", "_blank", 0, (prop("Hidden", True),))
        if mode == "query":
            query_into(smgr, ctx, source, user, password, what, document)
        elif mode == "import":
            import_into(smgr, ctx, source, user, password, what, profile, document)
        else:
            raise SystemExit(f"unknown mode {mode!r}")
        document.storeToURL(uno.systemPathToFileUrl(os.path.abspath(output)), (prop("FilterName", "calc8"),))
        document.close(True)
        try:
            desktop.terminate()
        except Exception:
            pass  # the bridge goes away as soffice quits
    except BaseException:
        soffice.kill()
        raise
    finally:
        try:
            soffice.wait(timeout=60)
        except subprocess.TimeoutExpired:
            soffice.kill()


if __name__ == "__main__":
    main()
