"""The checks of ``detran/agenda_slots`` and the admin alerts behind them (issue 10).

Evaluated after every sync, also a failed one: ``removal_share_within_limit`` (one read
removing too large a share of the examiner's current slots) and
``run_failure_rate_within_limit`` (too many failed runs of the examiner over 24 h). Mass
removals and refused logins alert the admins on Telegram once when they start and once
when they clear; the alert state lives in the control database.
"""

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, MetadataValue

from ...lib.alerts import AlertState, announce
from ...lib.db import DatabaseConfigError
from ...lib.redact import redact
from ...resources import DatabaseResource, TelegramResource
from ..guards import (
    DEFAULT_FAILURE_RATE,
    DEFAULT_REMOVAL_SHARE,
    FAILURE_RATE_VAR,
    REMOVAL_SHARE_VAR,
    failure_rate,
    login_key,
    login_refused,
    parse_share,
    removal_guard,
)
from ..sync import SyncResult
from .resources import DetranPortalResource

REMOVAL_CHECK = "removal_share_within_limit"
FAILURE_RATE_CHECK = "run_failure_rate_within_limit"
AGENDA_CHECKS = [
    AssetCheckSpec(
        REMOVAL_CHECK,
        asset=["detran", "agenda_slots"],
        description=f"Fails when one read would remove more than {REMOVAL_SHARE_VAR} "
        f"(default {DEFAULT_REMOVAL_SHARE:.0%}) of the examiner's current slots of the day, "
        "and stays failed until they come back. The read is still recorded.",
    ),
    AssetCheckSpec(
        FAILURE_RATE_CHECK,
        asset=["detran", "agenda_slots"],
        description=f"Fails when more than {FAILURE_RATE_VAR} (default "
        f"{DEFAULT_FAILURE_RATE:.0%}) of the examiner's runs of the last 24 h failed.",
    ),
]


def _alerts(context, control_db: DatabaseResource) -> AlertState | None:
    """The alert state in the control database, or None (logged) when it is not configured.

    An unconfigured control database only turns the alerts off, never the sync.
    """
    try:
        return AlertState(control_db.db)
    except DatabaseConfigError as exc:
        context.log.warning(f"DETRAN alerts are off: {exc}")
        return None


def _announce(
    context,
    telegram: TelegramResource,
    alerts: AlertState | None,
    key: str,
    active: bool,
    **texts,
) -> None:
    if alerts is None:
        return
    try:
        change = announce(
            alerts,
            key,
            active,
            send=lambda text: telegram.notify_admins(text, context.log),
            **texts,
        )
    except Exception as exc:  # noqa: BLE001 - an alert problem must not hide the run's outcome
        context.log.warning(f"alert {key} not updated: {type(exc).__name__}: {exc}")
        return
    if change:
        context.log.warning(f"alert {key}: {change}")


def guard_checks(
    context,
    db,
    result: SyncResult,
    telegram: TelegramResource,
    control_db: DatabaseResource,
    portal: DetranPortalResource,
) -> list[AssetCheckResult]:
    """Evaluate the examiner's guards after a run, send the alerts, return both checks."""
    alerts = _alerts(context, control_db)
    who = f"examiner {result.usuario_id}"
    refused = login_refused(result)
    if refused is not None:
        _announce(
            context,
            telegram,
            alerts,
            login_key(result.usuario_id),
            refused,
            raised=lambda: (
                f"🔴 DETRAN: the portal refused the login of {who}: "
                f"{redact(result.error or '')}. Their agenda is not synced until the credentials are "
                "fixed (`sync-pipelines detran add-examiner --usuario-id "
                f"{result.usuario_id} ...`)."
            ),
            resolved=f"✅ DETRAN: {who} logs in to the portal again; their agenda syncs.",
        )
    checks = []
    guard = removal_guard(
        db,
        result,
        alerts,
        parse_share(REMOVAL_SHARE_VAR, portal.removal_alert_share, DEFAULT_REMOVAL_SHARE),
    )
    if guard is None:
        checks.append(
            AssetCheckResult(
                check_name=REMOVAL_CHECK,
                passed=True,
                metadata={"note": "no day was read: nothing removed, nothing to judge"},
            )
        )
    else:
        days = f"{result.window_start.isoformat()}" + (
            f"..{result.window_end.isoformat()}" if result.window_end != result.window_start else ""
        )
        _announce(
            context,
            telegram,
            alerts,
            guard.key,
            guard.active,
            details=guard.details(),
            raised=lambda: (
                f"⚠️ DETRAN: {guard.vanished} of {guard.before} current slots of {who} "
                f"on {days} vanished from the portal at once ({guard.share:.0%} > "
                f"{guard.threshold:.0%}). They are marked removed; check the portal before the "
                "clinic acts on it."
            ),
            resolved=f"✅ DETRAN: the slots of {who} on {days} are back to normal "
            f"({guard.share:.0%} missing).",
        )
        checks.append(
            AssetCheckResult(
                check_name=REMOVAL_CHECK,
                passed=not guard.active,
                metadata={
                    "before": guard.before,
                    "vanished": guard.vanished,
                    "share": MetadataValue.float(round(guard.share, 4)),
                    "threshold": MetadataValue.float(guard.threshold),
                    "this_run_before": guard.run_before,
                    "this_run_removed": guard.run_vanished,
                    "since_earlier_run": guard.carried_over,
                },
            )
        )
    rate = failure_rate(
        db,
        result.usuario_id,
        parse_share(FAILURE_RATE_VAR, portal.failure_rate_alert, DEFAULT_FAILURE_RATE),
    )
    checks.append(
        AssetCheckResult(
            check_name=FAILURE_RATE_CHECK,
            passed=not rate.too_high,
            severity=AssetCheckSeverity.WARN,
            metadata={
                "failed_runs": rate.failed,
                "finished_runs": rate.finished,
                "failure_rate": MetadataValue.float(round(rate.rate, 4)),
                "threshold": MetadataValue.float(rate.threshold),
                "hours": rate.hours,
            },
        )
    )
    return checks
