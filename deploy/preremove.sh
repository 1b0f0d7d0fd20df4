#!/bin/sh
# Before removal (not on upgrade): stop and disable the daemon. The store in
# /var/lib/cyberdrew is kept.
set -e
case "$1" in
	remove|purge|0)
		if [ -d /run/systemd/system ]; then
			systemctl disable --now cyberdrew.service >/dev/null 2>&1 || true
		fi
		;;
esac
