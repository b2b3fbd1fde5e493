"""Run-failure alerts: every failed run of this code location is told to the admins on Telegram.

The message names the job, the partition, the first line of the first error and links to
the run in the UI (``DAGSTER_WEBSERVER_URL``, default http://127.0.0.1:3000), all passed
through ``lib/redact`` so a secret or a CPF in an exception never reaches a chat. Sending is
best effort (``TelegramResource.notify_admins`` never raises): a Telegram outage must not
make the sensor itself fail and retry the same alert.

Default status RUNNING: the users expect to be told when a sync fails without anyone having
to switch the sensor on; with no ``TELEGRAM_BOT_TOKEN``/``ADMIN_USER_IDS`` each tick only
logs why nothing was sent.
"""

from dagster import DefaultSensorStatus, RunFailureSensorContext, run_failure_sensor

from ..lib.redact import redact
from ..resources import DEFAULT_WEBSERVER_URL, TelegramResource

MAX_ERROR_CHARS = 300


def run_url(run_id: str, webserver_url: str = DEFAULT_WEBSERVER_URL) -> str:
    base = webserver_url.strip() or DEFAULT_WEBSERVER_URL
    return f"{base.rstrip('/')}/runs/{run_id}"


def partition_of(tags: dict[str, str]) -> str:
    """The run's partition, a partition range (backfill of a single-run asset), or '-'."""
    if tags.get("dagster/partition"):
        return tags["dagster/partition"]
    start = tags.get("dagster/asset_partition_range_start")
    end = tags.get("dagster/asset_partition_range_end")
    if start and end:
        return start if start == end else f"{start} … {end}"
    return "-"


def _root_cause(error):
    # Dagster wraps the sync's exception ("Error occurred while executing op ..."): the
    # operator wants the sync's own message, the innermost cause.
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return error


def first_error_line(context: RunFailureSensorContext) -> str:
    """The first line of the first failed step's error, else of the run's failure."""
    for event in context.get_step_failure_events():
        error = getattr(event.event_specific_data, "error", None)
        if error is not None:
            message = _root_cause(error).message.strip()
            if message:
                return f"{event.step_key}: {message.splitlines()[0]}"
    error = getattr(context.failure_event.event_specific_data, "error", None)
    text = error.message if error is not None else (context.failure_event.message or "")
    lines = text.strip().splitlines()
    return lines[0] if lines else "(no error message)"


def job_label(context: RunFailureSensorContext) -> str:
    """The job's name; for the implicit asset job (UI materializations), what it ran."""
    run = context.dagster_run
    if not run.job_name.startswith("__"):
        return run.job_name
    if run.asset_selection:
        keys = sorted(key.to_user_string() for key in run.asset_selection)
    else:
        keys = sorted({e.step_key for e in context.get_step_failure_events() if e.step_key})
    if not keys:
        return run.job_name
    shown = ", ".join(keys[:4]) + (f" (+{len(keys) - 4})" if len(keys) > 4 else "")
    return f"materialize {shown}"


def failure_message(
    context: RunFailureSensorContext, webserver_url: str = DEFAULT_WEBSERVER_URL
) -> str:
    run = context.dagster_run
    error = first_error_line(context)
    if len(error) > MAX_ERROR_CHARS:
        error = error[: MAX_ERROR_CHARS - 1] + "…"
    retry = run.tags.get("dagster/retry_number")
    lines = [
        f"❌ Dagster run failed: {job_label(context)}",
        f"partition: {partition_of(run.tags)}",
        f"error: {error}",
    ]
    if retry:
        lines.append(f"automatic retry {retry} of this run")
    lines.append(f"run: {run_url(run.run_id, webserver_url)}")
    return redact("\n".join(lines))


@run_failure_sensor(
    name="run_failure_telegram_alert",
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    # Runs launched against another code location of the instance (a second workspace
    # entry, a CLI launch) fail just as loudly.
    monitor_all_code_locations=True,
    description=(
        "Sends each failed run of every code location to the admins on Telegram: job, "
        "partition, first error line (secrets and personal data redacted), link to the run."
    ),
)
def run_failure_telegram_alert(context: RunFailureSensorContext, telegram: TelegramResource):
    message = failure_message(context, telegram.webserver_url)
    outcome = telegram.notify_admins(message, context.log)
    if outcome.skipped_reason:
        context.log.info(f"run {context.dagster_run.run_id[:8]}: {outcome.skipped_reason}")
