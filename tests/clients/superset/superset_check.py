"""Drive a real Apache Superset against kpitables, through Superset's own REST API (the
calls its web UI makes), inside its Flask app; run with Superset's virtualenv.

    superset_check.py <kpitables sqlalchemy uri> <view> <dimension> <metric>

Adds kpitables as a database, creates a dataset for the view, runs a chart-data query
(the metric summed, grouped by the dimension) and a SQL Lab query, and prints what came
back as JSON for tests/clients/test_superset.py to check against the model and DuckDB.
The metadata database and config come from SUPERSET_CONFIG_PATH (`superset db upgrade`,
`fab create-admin` and `init` run first; see the test)."""

import json
import sys


def main():
    uri, view, dimension, metric = sys.argv[1:5]
    from superset.app import create_app

    app = create_app()
    client = app.test_client()

    def call(method, path, body=None, token=None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = client.open(path, method=method, json=body, headers=headers)
        payload = response.get_json(silent=True)
        if response.status_code >= 300:
            raise SystemExit(f"{method} {path} -> {response.status_code}: {payload or response.data[:2000]}")
        return payload

    login = call(
        "POST",
        "/api/v1/security/login",
        {"username": "admin", "password": "admin", "provider": "db", "refresh": False},
    )
    token = login["access_token"]

    tested = call(
        "POST",
        "/api/v1/database/test_connection/",
        {"database_name": "kpitables", "sqlalchemy_uri": uri},
        token,
    )
    database = call(
        "POST",
        "/api/v1/database/",
        {"database_name": "kpitables", "sqlalchemy_uri": uri, "expose_in_sqllab": True},
        token,
    )
    database_id = database["id"]
    schemas = call("GET", f"/api/v1/database/{database_id}/schemas/", token=token)["result"]
    tables = call(
        "GET",
        f"/api/v1/database/{database_id}/tables/?q=(schema_name:public,force:!t)",
        token=token,
    )["result"]

    dataset = call(
        "POST",
        "/api/v1/dataset/",
        {"database": database_id, "schema": "public", "table_name": view},
        token,
    )
    dataset_id = dataset["id"]
    detail = call("GET", f"/api/v1/dataset/{dataset_id}", token=token)["result"]
    columns = {
        c["column_name"]: {"description": c.get("description"), "type": c.get("type")}
        for c in detail["columns"]
    }

    summed = {
        "expressionType": "SIMPLE",
        "column": {"column_name": metric},
        "aggregate": "SUM",
        "label": f"SUM({metric})",
    }
    chart = call(
        "POST",
        "/api/v1/chart/data",
        {
            "datasource": {"id": dataset_id, "type": "table"},
            "force": True,
            "queries": [
                {
                    "columns": [dimension],
                    "metrics": [summed],
                    "orderby": [[summed, False]],
                    "row_limit": 10000,
                }
            ],
            "result_format": "json",
            "result_type": "full",
        },
        token,
    )
    result = chart["result"][0]

    sqllab = call(
        "POST",
        "/api/v1/sqllab/execute/",
        {
            "database_id": database_id,
            "sql": f"SELECT {dimension}, {metric} FROM {view} ORDER BY 1",
            "runAsync": False,
            "schema": "public",
            "client_id": "kpitables1",
        },
        token,
    )

    print(
        json.dumps(
            {
                "test_connection": tested,
                "schemas": schemas,
                "tables": [t.get("value") for t in tables],
                "columns": columns,
                "chart_query": result.get("query"),
                "chart_rows": result["data"],
                "sqllab_rows": sqllab["data"],
            },
            default=str,
        )
    )


if __name__ == "__main__":
    main()
