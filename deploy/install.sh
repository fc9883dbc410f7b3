#!/bin/sh
# Install, upgrade or remove station-bridge on Raspberry Pi OS (64-bit) or Debian, as root.
#
#   sudo deploy/install.sh                   install, or upgrade what is installed
#   sudo deploy/install.sh --remove          remove the program and the unit; keep config and data
#   sudo deploy/install.sh --remove --purge  remove config, data, backups and the user too
#
# What goes where (docs/install.md):
#   /opt/station-bridge/.venv        the program, in its own virtual environment
#   /etc/station-bridge/             config.yaml (root:station-bridge 0640), mes-password (root 0600)
#   /var/lib/station-bridge/         the data directory (station-bridge 0750)
#   /var/backups/station-bridge/     a copy of the data directory from before each upgrade
#   /etc/systemd/system/station-bridge.service, enabled
#   /etc/modules-load.d/station-bridge.conf: the USB serial drivers, loaded at boot (below)
#   the system user station-bridge, in the group dialout (serial gauges)
#
# An upgrade stops the bridge, copies its data directory, installs the new version and the new
# unit, and starts the bridge again if it was running. Without a running systemd (a chroot, an
# image being built) the unit is enabled but nothing is started or stopped.
set -eu

NAME=station-bridge
SOURCE=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=/opt/$NAME
VENV=$PREFIX/.venv
CONFIG_DIR=/etc/$NAME
DATA_DIR=/var/lib/$NAME
BACKUPS=/var/backups/$NAME
UNIT=/etc/systemd/system/$NAME.service
MODULES=/etc/modules-load.d/$NAME.conf
PYTHON=${PYTHON:-python3}

say() { printf '%s\n' "$*"; }
die() { printf '%s: %s\n' "$0" "$*" >&2; exit 1; }

systemd_running() { [ -d /run/systemd/system ]; }

active() { systemd_running && systemctl --quiet is-active "$NAME"; }

ensure_python() {
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
        || die "needs Python 3.11 or newer as $PYTHON (Raspberry Pi OS bookworm has it)"
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null \
        || die "needs the venv module: apt-get install python3-venv"
}

ensure_user() {
    if ! getent passwd "$NAME" >/dev/null; then
        useradd --system --user-group --home-dir "$DATA_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "station-bridge service" "$NAME"
        say "created the system user $NAME"
    fi
    # dialout owns the serial ports (/dev/ttyUSB*, ttyACM*, ttyAMA*)
    getent group dialout >/dev/null || groupadd --system dialout
    usermod --append --groups dialout "$NAME"
}

backup_data() {
    [ -d "$DATA_DIR/store" ] || return 0
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    install -d -m 0700 "$BACKUPS"
    cp -a "$DATA_DIR" "$BACKUPS/$stamp"
    say "copied $DATA_DIR to $BACKUPS/$stamp"
}

install_program() {
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade "$SOURCE"
    install -d -m 0755 "$PREFIX/docs"
    install -m 0644 "$SOURCE"/docs/*.md "$PREFIX/docs/"
    say "installed $("$VENV/bin/pip" show "$NAME" | sed -n 's/^Version: /version /p') in $VENV"
}

install_config() {
    install -d -m 0750 -o root -g "$NAME" "$CONFIG_DIR"
    if [ ! -e "$CONFIG_DIR/config.yaml" ]; then
        install -m 0640 -o root -g "$NAME" "$SOURCE/deploy/config.yaml" "$CONFIG_DIR/config.yaml"
        say "wrote $CONFIG_DIR/config.yaml: set the broker, the MES and the stations"
    fi
    if [ ! -e "$CONFIG_DIR/mes-password" ]; then
        install -m 0600 -o root -g root /dev/null "$CONFIG_DIR/mes-password"
        say "wrote an empty $CONFIG_DIR/mes-password: put the MES account's password in it"
    fi
    install -d -m 0750 -o "$NAME" -g "$NAME" "$DATA_DIR"
}

# The unit allows the device groups char-ttyUSB and char-ttyACM, which systemd looks up in
# /proc/devices when the bridge starts: they are only there once their drivers are loaded. Loaded
# at boot, an adapter plugged in later is allowed too; loaded on demand, it would not be.
install_modules() {
    printf '%s\n' "# station-bridge: serial drivers the unit's DeviceAllow= names" \
        usbserial cdc_acm >"$MODULES"
    if systemd_running && command -v modprobe >/dev/null; then
        modprobe --all usbserial cdc_acm || say "could not load usbserial and cdc_acm now"
    fi
}

install_unit() {
    install -m 0644 "$SOURCE/deploy/$NAME.service" "$UNIT"
    if systemd_running; then
        systemctl daemon-reload
    fi
    systemctl enable --quiet "$NAME.service"
    say "enabled $UNIT"
}

install_all() {
    ensure_python
    was_active=no
    if active; then
        was_active=yes
        systemctl stop "$NAME"
        say "stopped $NAME for the upgrade"
    fi
    backup_data
    ensure_user
    install_program
    install_config
    install_modules
    install_unit
    if [ "$was_active" = yes ]; then
        systemctl start "$NAME"  # migrates the data directory if the new version needs it
        say "started $NAME again"
    elif systemd_running; then
        say "next: edit $CONFIG_DIR/config.yaml and $CONFIG_DIR/mes-password, then"
        say "  $VENV/bin/$NAME check --config $CONFIG_DIR/config.yaml && systemctl start $NAME"
    else
        say "systemd is not running here: $NAME will start at the next boot"
    fi
}

remove_all() {
    purge=$1
    if systemd_running; then
        systemctl stop "$NAME" 2>/dev/null || true
    fi
    if [ -e "$UNIT" ]; then
        systemctl disable --quiet "$NAME.service" || true
        rm -f "$UNIT"
        ! systemd_running || systemctl daemon-reload
    fi
    rm -rf "$PREFIX" "$MODULES"
    say "removed $PREFIX, $UNIT and $MODULES"
    if [ "$purge" = yes ]; then
        rm -rf "$CONFIG_DIR" "$DATA_DIR" "$BACKUPS"
        ! getent passwd "$NAME" >/dev/null || userdel "$NAME"
        say "removed $CONFIG_DIR, $DATA_DIR, $BACKUPS and the user $NAME"
    else
        say "kept $CONFIG_DIR, $DATA_DIR and $BACKUPS (--purge removes them)"
    fi
}

[ "$(id -u)" -eq 0 ] || die "run it as root (sudo)"
case "${1:-}" in
    "") install_all ;;
    --remove)
        case "${2:-}" in
            "") remove_all no ;;
            --purge) remove_all yes ;;
            *) die "unknown option $2" ;;
        esac ;;
    *) die "usage: $0 [--remove [--purge]]" ;;
esac
