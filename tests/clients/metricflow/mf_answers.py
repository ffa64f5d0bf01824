"""MetricFlow's own answers to a list of questions, in one process (run with the Python of
the virtualenv that has dbt-metricflow and dbt-duckdb; tests/clients/test_metricflow.py).

Usage: python mf_answers.py PROJECT_DIR < questions.json > answers.json
Each question is {"metrics": [...], "group_by": [...], "where": [...] or null,
"order": [...]} or {"saved_query": name}; each answer is {"columns": [...], "rows": [[...], ...]} or
{"error": "..."}.
"""

import datetime
import decimal
import json
import os
import pathlib
import sys


def plain(value):
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def main():
    project = pathlib.Path(sys.argv[1]).resolve()
    questions = json.load(sys.stdin)
    os.chdir(project)
    from dbt_metricflow.cli.cli_configuration import CLIConfiguration
    from metricflow.engine.metricflow_engine import MetricFlowQueryRequest

    cfg = CLIConfiguration()
    cfg.setup(dbt_profiles_path=project, dbt_project_path=project, configure_file_logging=False)
    answers = []
    for q in questions:
        try:
            if q.get("saved_query"):
                request = MetricFlowQueryRequest.create(saved_query_name=q["saved_query"])
            else:
                request = MetricFlowQueryRequest.create(
                    metric_names=q["metrics"],
                    group_by_names=q.get("group_by") or None,
                    where_constraints=q.get("where") or None,
                    order_by_names=q.get("order") or None,
                )
            table = cfg.mf.query(mf_request=request).result_df
            answers.append({
                "columns": list(table.column_names),
                "rows": [[plain(v) for v in row] for row in table.rows],
            })
        except Exception as e:  # one failing question must not hide the others' answers
            answers.append({"error": f"{type(e).__name__}: {e}"})
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    main()
