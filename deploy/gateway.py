"""The IB Gateway VM: Container-Optimized OS, no external IP, the pinned gnzsnz/ib-gateway image.

Its cloud-init installs deploy/gateway/ib-gateway.service and start-gateway.sh, which read the IB
credentials from Secret Manager at every boot. The deploy passes only secret *names* to the VM
(as metadata); the values go to Secret Manager on gcloud's standard input.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from deploy.config import DeployConfig
from deploy.steps import Ensure, Ref, Remove, Step, WriteFile, gcloud, secret_with_value

GATEWAY_DIR = Path(__file__).resolve().parent / 'gateway'
SCRIPT_PATH = '/var/lib/ib-gateway/start-gateway.sh'
UNIT_PATH = '/etc/systemd/system/ib-gateway.service'


def cloud_init() -> str:
    """The VM's user-data: install the unit and the start script, then start the unit."""
    document = {
        'write_files': [
            {'path': UNIT_PATH, 'permissions': '0644', 'owner': 'root',
             'content': (GATEWAY_DIR / 'ib-gateway.service').read_text()},
            {'path': SCRIPT_PATH, 'permissions': '0700', 'owner': 'root',
             'content': (GATEWAY_DIR / 'start-gateway.sh').read_text()},
        ],
        'runcmd': [['systemctl', 'daemon-reload'], ['systemctl', 'start', 'ib-gateway.service']],
    }
    return '#cloud-config\n' + yaml.safe_dump(document, sort_keys=False, width=1000)


def metadata(cfg: DeployConfig) -> dict[str, str]:
    """Instance metadata: gateway settings and secret names, never secret values."""
    return {
        'google-logging-enabled': 'true',
        'enable-oslogin': 'TRUE',
        'ib-gateway-image': cfg.gateway_image,
        'ib-gateway-api-port': str(cfg.gateway_port),
        'ib-gateway-api-source-range': cfg.connector_range,
        'ib-username-secret': cfg.ib_username_secret,
        'ib-password-secret': cfg.ib_password_secret,
        'ib-trading-mode': cfg.trading_mode,
        'ib-read-only-api': 'yes' if cfg.gateway_read_only_api else 'no',
        'ib-auto-restart-time': cfg.gateway_auto_restart_time,
        'ib-twofa-timeout-action': cfg.gateway_twofa_timeout_action,
        'ib-relogin-after-twofa-timeout': 'yes' if cfg.gateway_relogin_after_twofa_timeout else 'no',
        'ib-existing-session-action': cfg.gateway_existing_session_action,
        'ib-time-zone': cfg.gateway_time_zone,
    }


def _metadata_flag(cfg: DeployConfig) -> str:
    pairs = metadata(cfg)
    if any(',' in value for value in pairs.values()):
        raise ValueError('a gateway metadata value contains a comma')
    return '--metadata=' + ','.join(f'{key}={value}' for key, value in pairs.items())


def secret_steps(cfg: DeployConfig) -> list[Step]:
    """The two credential secrets, and a new version of each whose value was given and changed."""
    return [step for secret, value_name in ((cfg.ib_username_secret, 'IB_USERNAME'),
                                            (cfg.ib_password_secret, 'IB_PASSWORD'))
            for step in secret_with_value(cfg.project, secret, value_name)]


def vm_steps(cfg: DeployConfig, work_dir: Path) -> list[Step]:
    """Render the cloud-init, then create the VM (or update its metadata: applied at its next restart)."""
    user_data = work_dir / 'gateway-cloud-init.yaml'
    zone = f'--zone={cfg.zone}'
    return [
        WriteFile('gateway cloud-init', user_data, cloud_init()),
        Ensure(f'gateway VM {cfg.gateway_vm}',
               probe=gcloud(cfg.project, 'compute', 'instances', 'describe', cfg.gateway_vm, zone),
               create=(gcloud(cfg.project, 'compute', 'instances', 'create', cfg.gateway_vm, zone,
                              f'--machine-type={cfg.gateway_machine_type}',
                              '--image-family=cos-stable', '--image-project=cos-cloud', '--boot-disk-size=20GB',
                              f'--subnet={cfg.subnet}', '--no-address',
                              Ref('GATEWAY_IP', prefix='--private-network-ip='),
                              f'--tags={cfg.gateway_tag}',
                              f'--service-account={cfg.service_account("gateway")}', '--scopes=cloud-platform',
                              '--shielded-secure-boot', '--shielded-vtpm', '--shielded-integrity-monitoring',
                              f'--metadata-from-file=user-data={user_data}', _metadata_flag(cfg)),),
               update=(gcloud(cfg.project, 'compute', 'instances', 'add-metadata', cfg.gateway_vm, zone,
                              f'--metadata-from-file=user-data={user_data}', _metadata_flag(cfg)),)),
    ]


def remove_vm(cfg: DeployConfig) -> list[Step]:
    """Delete the VM and its boot disk."""
    zone = f'--zone={cfg.zone}'
    return [Remove(f'gateway VM {cfg.gateway_vm}',
                   probe=gcloud(cfg.project, 'compute', 'instances', 'describe', cfg.gateway_vm, zone),
                   delete=(gcloud(cfg.project, 'compute', 'instances', 'delete', cfg.gateway_vm, zone,
                                  '--delete-disks=all'),))]


def remove_secrets(cfg: DeployConfig) -> list[Step]:
    """Delete the credential secrets and every version of them."""
    return [Remove(f'secret {secret}',
                   probe=gcloud(cfg.project, 'secrets', 'describe', secret),
                   delete=(gcloud(cfg.project, 'secrets', 'delete', secret),))
            for secret in (cfg.ib_username_secret, cfg.ib_password_secret)]
