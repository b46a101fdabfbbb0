"""Deploy the intent runner to Google Cloud (`python -m deploy`) and run a local copy of it (`deploy.local_stack`).

Every cloud change goes through the `gcloud` (and, for BigQuery, `bq`) command-line tools, so what the
deploy does is exactly the list of commands `--dry-run` prints.
"""
