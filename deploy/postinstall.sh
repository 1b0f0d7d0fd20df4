#!/bin/sh
# After install or upgrade: load the unit; restart the daemon if it runs.
# A first install does not start it: edit /etc/cyberdrew/cyberdrew.env,
# then `systemctl enable --now cyberdrew`.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	systemctl try-restart cyberdrew.service >/dev/null 2>&1 || true
fi
