#!/bin/sh
# After install or upgrade: generate the keys left empty in
# /etc/cyberdrew/cyberdrew.env (never replacing a set one), so the packaged
# daemon is never open; load the unit; restart the daemon if it runs. A
# first install does not start it: edit /etc/cyberdrew/cyberdrew.env, then
# `systemctl enable --now cyberdrew`. DPKG_ROOT (empty on a normal install)
# prefixes every path.
set -e
umask 077
root="${DPKG_ROOT:-}"
env_file="$root/etc/cyberdrew/cyberdrew.env"

# gen_key NAME: a set NAME=value line is kept; otherwise the first empty or
# commented-out NAME= line becomes NAME=<64 random hex digits>, or one is
# appended.
gen_key() {
	name=$1
	if grep -Eq "^[[:space:]]*$name=[\"']?[^\"'[:space:]]" "$env_file"; then
		return 0
	fi
	key=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
	if [ ${#key} -ne 64 ]; then
		echo "cyberdrew: could not read /dev/urandom to generate $name" >&2
		exit 1
	fi
	tmp="$env_file.tmp.$$"
	awk -v name="$name" -v key="$key" '
		!done && $0 ~ "^[[:space:]]*#?[[:space:]]*" name "=[\"'\'']*[[:space:]]*$" { print name "=" key; done = 1; next }
		{ print }
		END { if (!done) print name "=" key }
	' "$env_file" >"$tmp"
	cat "$tmp" >"$env_file"
	rm -f "$tmp"
	echo "cyberdrew: generated $name in $env_file"
}

mkdir -p "$(dirname "$env_file")"
[ -f "$env_file" ] || : >"$env_file"
gen_key INNGEST_EVENT_KEY
gen_key INNGEST_SIGNING_KEY
# Read by systemd (as root) before the unit's dynamic user starts.
chmod 0600 "$env_file"
if [ "$(id -u)" = 0 ]; then
	chown root:root "$env_file"
fi

if [ -z "$root" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	systemctl try-restart cyberdrew.service >/dev/null 2>&1 || true
fi
