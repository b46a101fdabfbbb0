"""`python -m deploy apply|teardown|check`: deploy to Google Cloud, remove the deploy, or validate its files.

    python -m deploy apply    [--config deploy/config.env] [--dry-run]
    python -m deploy teardown [--config deploy/config.env] [--dry-run] [--delete-data] --yes
    python -m deploy check    [--config deploy/config.env] [--schedules FILE] [--trading-config FILE]
"""
from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

from deploy.config import REPO, ConfigError, DeployConfig, load_config
from deploy.plan import apply_plan, teardown_plan
from deploy.runner import DeployError, Runner
from deploy.schedules import ScheduleError, load_jobs

DEFAULT_CONFIG = REPO / 'deploy' / 'config.env'
TRADING_CONFIG = REPO / 'config' / 'trading.toml'
WORK_DIR = REPO / '.local' / 'deploy'


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m deploy', description=__doc__.split('\n')[0])
    commands = parser.add_subparsers(dest='command', required=True)
    for name, summary in (('apply', 'create or update everything (safe to re-run)'),
                          ('teardown', 'remove what apply created'),
                          ('check', 'validate the config and schedules; run nothing')):
        command = commands.add_parser(name, help=summary, description=summary)
        command.add_argument('--config', type=Path, default=DEFAULT_CONFIG,
                             help='env file with the settings (default: deploy/config.env)')
        if name == 'check':
            command.add_argument('--schedules', type=Path, help='check this schedules file instead of SCHEDULES_FILE')
            command.add_argument('--trading-config', type=Path, default=TRADING_CONFIG,
                                 help='check this trading config (default: config/trading.toml)')
        else:
            command.add_argument('--dry-run', action='store_true', help='print every command, run none')
            command.add_argument('--work-dir', type=Path, default=WORK_DIR,
                                 help='where rendered files (cloud-init, alert policies) go (default: .local/deploy)')
        if name == 'teardown':
            command.add_argument('--delete-data', action='store_true',
                                 help='also delete the Firestore database and the IB credential secrets')
            command.add_argument('--yes', action='store_true', help='confirm the teardown')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config)
        jobs = load_jobs(getattr(args, 'schedules', None) or cfg.schedules_file)
    except (ConfigError, ScheduleError) as exc:
        print(f'deploy: {exc}', file=sys.stderr)
        return 2
    if args.command == 'check':
        return check(cfg, jobs, args.trading_config)
    if args.command == 'teardown':
        if not (args.yes or args.dry_run):
            print(f'deploy: teardown removes the deploy from project {cfg.project}; add --yes to confirm',
                  file=sys.stderr)
            return 2
        steps = teardown_plan(cfg, delete_data=args.delete_data)
    else:
        steps = apply_plan(cfg, jobs, args.work_dir)
    if args.dry_run:
        print(f'# dry run for project {cfg.project}: nothing is executed; probes decide between the create and '
              'update commands shown')
    runner = Runner(secrets=cfg.secret_values, dry_run=args.dry_run, out=sys.stdout, cwd=REPO)
    try:
        runner.run(steps)
    except DeployError as exc:
        print(f'deploy: {exc}', file=sys.stderr)
        return 1
    if args.command == 'apply' and not args.dry_run:
        print(f'# done: publish an intent with\n'
              f"#   gcloud pubsub topics publish {cfg.intents_topic} --project={cfg.project} "
              f"--message='{{\"intent\":\"health\"}}'\n"
              f'#   gcloud pubsub subscriptions pull {cfg.results_subscription} --project={cfg.project} --auto-ack')
    return 0


def check(cfg: DeployConfig, jobs: list, trading_config: Path) -> int:
    """Validate what the deploy ships as the function will read it; 2 when anything would be refused."""
    from deploy import checks   # imports the runtime (intents, strategies) to validate with its own models

    now = datetime.now(timezone.utc)
    problems = [*checks.trading_config_problems(trading_config, cfg.trading_mode, now.date()),
                *checks.schedule_problems(jobs)]
    _describe(cfg, len(jobs))
    print('\nnext 7 days (New York, UTC):')
    for line in checks.describe_firings(checks.next_firings(jobs, now)):
        print(f'  {line}')
    if problems:
        print(f'\n{len(problems)} problem(s): each would make runs fail in the cloud', file=sys.stderr)
        for problem in problems:
            print(f'deploy: {problem}', file=sys.stderr)
        return 2
    print(f'\nok: {trading_config.name} and {len(jobs)} scheduled requests are valid')
    return 0


def _describe(cfg: DeployConfig, job_count: int) -> None:
    print(f'project {cfg.project}, region {cfg.region}: function {cfg.function_name} '
          f'({cfg.function_concurrency} x {cfg.function_max_instances} = {cfg.client_slots} gateway clients at most, '
          f'timeout {cfg.function_timeout_seconds}s), gateway {cfg.gateway_vm} ({cfg.trading_mode}, '
          f'port {cfg.gateway_port}), {job_count} scheduler jobs')


if __name__ == '__main__':
    sys.exit(main())
