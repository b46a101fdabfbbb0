"""functions-framework loads this file: `functions-framework --target run_intent` (or `notify_result`)."""
from functions.main import notify_result, run_intent  # noqa: F401
