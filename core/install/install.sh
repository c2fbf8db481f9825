#!/bin/sh
# Server Manager agent installer for Linux, rendered by the core for one request: the core's address,
# its certificate pins and the SHA-256 of the agent package are written in below, so what this
# script downloads is checked against nothing but what the core already said.
#
# It downloads the agent package from the core, checks its SHA-256, installs it into a venv under
# /opt/servermanager/agent, writes /etc/servermanager/agent.toml, installs and starts the systemd unit,
# and waits until the agent has enrolled. Run as root, e.g. as the core's "Add server" line does:
#   printf 'Authorization: Bearer %s\n' TOKEN | curl -fsS [PINNING] -H @- CORE/api/v1/agent/install.sh | sudo sh
# Saved to a file instead: sh install.sh --token-stdin < token-file (or SM_AGENT_ENROLL_TOKEN=...).
set -eu

CORE_URL=@CORE_URL@
CORE_PIN=@CORE_PIN@
CURL_PIN=@CURL_PIN@
PACKAGE=@PACKAGE@
PACKAGE_SHA256=@PACKAGE_SHA256@
VERSION=@VERSION@
TOKEN=@TOKEN@

usage() {
	cat <<EOF
Install the Server Manager agent $VERSION from $CORE_URL and enroll it.

usage: sh install.sh [--token-stdin] [--python PYTHON] [--prefix DIR --no-service]

  --token-stdin    read the enrollment token from stdin (when this script runs from a file)
  --python PYTHON  the Python (3.11 or newer) to build the agent's venv with (default: python3)
  --no-service     install and enroll only: no system user, no systemd unit; prints how to run it
  --prefix DIR     install under DIR (DIR/opt, DIR/etc, DIR/var/lib); needs --no-service
EOF
}

say() { printf 'servermanager install: %s\n' "$*" >&2; }
die() {
	say "$*"
	exit 1
}

# All in one function, called on the last line: a download cut short runs nothing.
main() {
	prefix=
	service=1
	python=
	token_stdin=0
	while [ $# -gt 0 ]; do
		case $1 in
		--prefix)
			[ $# -ge 2 ] || die "--prefix needs a directory"
			prefix=$2
			shift 2
			;;
		--prefix=*)
			prefix=${1#--prefix=}
			shift
			;;
		--python)
			[ $# -ge 2 ] || die "--python needs a program"
			python=$2
			shift 2
			;;
		--python=*)
			python=${1#--python=}
			shift
			;;
		--no-service)
			service=0
			shift
			;;
		--token-stdin)
			token_stdin=1
			shift
			;;
		-h | --help)
			usage
			exit 0
			;;
		*) die "unknown option $1 (see --help)" ;;
		esac
	done

	if [ "$token_stdin" = 1 ]; then
		IFS= read -r TOKEN || [ -n "$TOKEN" ] || die "--token-stdin: nothing on stdin"
	fi
	[ -n "$TOKEN" ] || TOKEN=${SM_AGENT_ENROLL_TOKEN:-}
	[ -n "$TOKEN" ] || die "no enrollment token: fetch this script with one, or give --token-stdin or SM_AGENT_ENROLL_TOKEN"

	if [ "$service" = 1 ]; then
		[ -z "$prefix" ] || die "--prefix installs no service: give --no-service too"
		[ "$(id -u)" = 0 ] || die "run this as root (sudo sh), or with --no-service --prefix DIR as any user"
		command -v systemctl >/dev/null 2>&1 || die "no systemctl here: give --no-service and run the agent your own way"
	fi
	if [ -n "$prefix" ]; then
		mkdir -p "$prefix" || die "cannot create $prefix"
		prefix=$(cd "$prefix" && pwd)
	fi
	command -v curl >/dev/null 2>&1 || die "curl is needed"

	if [ -z "$python" ]; then
		for candidate in python3 python3.13 python3.12 python3.11; do
			if command -v "$candidate" >/dev/null 2>&1; then
				python=$candidate
				break
			fi
		done
	fi
	[ -n "$python" ] || die "Python 3.11 or newer is needed (Debian, Ubuntu: apt install python3 python3-venv)"
	"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
		die "$python is older than 3.11; give --python with a newer one"
	"$python" -c 'import ensurepip, venv' 2>/dev/null ||
		die "$python cannot make a venv (Debian, Ubuntu: apt install python3-venv)"

	venv=$prefix/opt/servermanager/agent
	etc=$prefix/etc/servermanager
	state=$prefix/var/lib/servermanager-agent
	conf=$etc/agent.toml

	tmp=$(mktemp -d)
	agent_pid=
	cleanup() {
		if [ -n "$agent_pid" ]; then
			kill "$agent_pid" 2>/dev/null || true
		fi
		rm -rf "$tmp"
	}
	trap cleanup EXIT
	trap 'exit 1' INT TERM HUP

	# The token travels on stdin (curl -H @-), never in an argument that `ps` shows.
	fetch() {
		if [ -n "$CURL_PIN" ]; then
			# --insecure: the core's certificate is self-signed; --pinnedpubkey is the check instead,
			# and curl makes it whatever --insecure says.
			printf 'Authorization: Bearer %s\n' "$TOKEN" |
				curl -fsS --proto '=https' --insecure --pinnedpubkey "$CURL_PIN" -H @- -o "$2" "$CORE_URL$1"
		else
			printf 'Authorization: Bearer %s\n' "$TOKEN" | curl -fsS -H @- -o "$2" "$CORE_URL$1"
		fi
	}

	say "downloading $PACKAGE from $CORE_URL"
	fetch /api/v1/agent/package "$tmp/$PACKAGE" || die "could not download the agent package (token expired or used?)"
	if command -v sha256sum >/dev/null 2>&1; then
		got=$(sha256sum "$tmp/$PACKAGE" | cut -d ' ' -f 1)
	else
		got=$("$python" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$tmp/$PACKAGE")
	fi
	[ "$got" = "$PACKAGE_SHA256" ] || die "the package's SHA-256 is $got, not $PACKAGE_SHA256 as the core said: not installing it"

	say "installing into $venv"
	if [ ! -x "$venv/bin/python" ]; then
		mkdir -p "$(dirname "$venv")"
		"$python" -m venv "$venv" || die "could not create the venv $venv"
	fi
	pip() { "$venv/bin/python" -m pip --disable-pip-version-check --quiet "$@"; }
	pip install --upgrade "$tmp/${PACKAGE}[agent]" || die "pip could not install the agent"
	# The same version again (a re-run) is not reinstalled by --upgrade alone.
	pip install --no-deps --force-reinstall "$tmp/$PACKAGE" || die "pip could not install the agent"

	mkdir -p "$etc"
	{
		printf '# Written by the Server Manager agent installer from %s.\n' "$CORE_URL"
		printf '# Every option: packaging/agent.toml.example in the source, or: servermanager agent --help\n'
		printf 'core = "%s"\n' "$CORE_URL"
		if [ -n "$CORE_PIN" ]; then
			printf '# The pin of the TLS certificate of the core (servermanager admin fingerprint prints it).\n'
			printf 'core_fingerprint = "%s"\n' "$CORE_PIN"
		fi
	} >"$tmp/agent.toml"
	if [ -f "$conf" ] && ! cmp -s "$conf" "$tmp/agent.toml"; then
		backup=$conf.before-$(date +%Y%m%d%H%M%S)
		cp -p "$conf" "$backup"
		say "replaced $conf; the old one is $backup (copy its [exec] or other settings back if it had any)"
	fi
	cp "$tmp/agent.toml" "$conf"
	chmod 0644 "$conf"

	enrolled() { [ -s "$state/credential" ]; }

	if [ "$service" = 0 ]; then
		if enrolled; then
			say "already enrolled (kept $state/credential; delete it to enroll anew)"
		else
			say "enrolling with $CORE_URL"
			SM_AGENT_ENROLL_TOKEN=$TOKEN "$venv/bin/servermanager" agent --config "$conf" --state-dir "$state" \
				>"$tmp/agent.log" 2>&1 &
			agent_pid=$!
			waited=0
			while ! enrolled; do
				if ! kill -0 "$agent_pid" 2>/dev/null; then
					cat "$tmp/agent.log" >&2
					agent_pid=
					die "the agent stopped before it enrolled"
				fi
				[ "$waited" -lt 60 ] || die "the agent did not enroll within 60 s"
				sleep 1
				waited=$((waited + 1))
			done
			kill -TERM "$agent_pid"
			wait "$agent_pid" || true
			agent_pid=
		fi
		say "installed; run the agent with:"
		printf '  %s agent --config %s --state-dir %s\n' "$venv/bin/servermanager" "$conf" "$state"
		exit 0
	fi

	# The unit as the core's version ships it, started from this venv.
	cat >"$tmp/unit" <<'SERVERMANAGER_UNIT_END'
@UNIT@
SERVERMANAGER_UNIT_END
	unit_name=@UNIT_NAME@
	user=$(sed -n 's/^User=//p' "$tmp/unit" | head -n 1)
	group=$(sed -n 's/^Group=//p' "$tmp/unit" | head -n 1)
	state_name=$(sed -n 's/^StateDirectory=//p' "$tmp/unit" | head -n 1 | cut -d ' ' -f 1)
	[ -z "$state_name" ] || state=/var/lib/$state_name
	if [ -n "$group" ] && ! getent group "$group" >/dev/null 2>&1; then
		groupadd --system "$group" || die "could not create the group $group"
	fi
	if [ -n "$user" ] && ! id "$user" >/dev/null 2>&1; then
		useradd --system --no-create-home --home-dir "$state" --shell /usr/sbin/nologin ${group:+--gid "$group"} "$user" ||
			die "could not create the user $user"
	fi
	# Its commands (ExecStart=, ExecStartPre=+...) run servermanager from this venv, wherever the unit had it.
	sed "s|^\(ExecStart[A-Za-z]*=[-+!@:]*\)[^ ]*/servermanager |\1$venv/bin/servermanager |" "$tmp/unit" \
		>"/etc/systemd/system/$unit_name"
	chmod 0644 "/etc/systemd/system/$unit_name"

	env_file=$etc/agent.env
	if enrolled; then
		say "already enrolled (kept $state/credential; delete it to enroll anew)"
	else
		# Read by the unit's EnvironmentFile on its first start only; removed once the agent enrolled.
		(
			umask 077
			{
				if [ -f "$env_file" ]; then grep -v '^SM_AGENT_ENROLL_TOKEN=' "$env_file" || true; fi
				printf 'SM_AGENT_ENROLL_TOKEN=%s\n' "$TOKEN"
			} >"$tmp/agent.env"
		)
		cp "$tmp/agent.env" "$env_file"
		chmod 0600 "$env_file"
	fi
	systemctl daemon-reload
	systemctl enable "$unit_name" >/dev/null 2>&1 || die "systemctl enable $unit_name failed"
	systemctl restart "$unit_name" || die "systemctl restart $unit_name failed; see: journalctl -u $unit_name"

	waited=0
	while ! enrolled; do
		if systemctl is-failed --quiet "$unit_name"; then
			die "the agent failed before it enrolled; see: journalctl -u $unit_name -n 50"
		fi
		[ "$waited" -lt 60 ] || die "the agent did not enroll within 60 s; see: journalctl -u $unit_name -n 50"
		sleep 1
		waited=$((waited + 1))
	done
	if [ -f "$env_file" ]; then
		(
			umask 077
			grep -v '^SM_AGENT_ENROLL_TOKEN=' "$env_file" >"$tmp/agent.env" || true
		)
		cp "$tmp/agent.env" "$env_file"
	fi
	say "the agent runs as the service $unit_name and is enrolled with $CORE_URL"
	say "status: systemctl status $unit_name; settings: $conf"
}

main "$@"
