"""functions-framework loads this file: `functions-framework --target run_intent`."""
from functions.main import run_intent  # noqa: F401
