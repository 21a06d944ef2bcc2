#!/usr/bin/env bash
# netns-demo.sh: run examples/federated-learning as seven separate hosts on
# this one machine, using Linux network namespaces.
#
# Usage (as root):
#
#   scripts/netns-demo.sh [--wan-delay D] [--iteration-times] [ITERATIONS] [PLAYER FLAGS...]
#
#   --wan-delay D      join the players through scripts/wandelay, a user-space
#                      switch that delays every packet by D one way (e.g. 20ms,
#                      for a 40 ms round trip), instead of a bridge
#   --iteration-times  time each iteration of the model owner (from its
#                      progress lines: one an iteration up to 19 iterations,
#                      one every tenth of the run beyond) and print the times
#   ITERATIONS         training iterations (default 30)
#   PLAYER FLAGS       passed unchanged to every player, e.g. --seed 3
#
# Topology. Every player gets its own network namespace, so it has its own
# interfaces, addresses, routes and ports, exactly as if it were a separate
# machine. A further namespace, sf-switch, holds a Linux bridge that plays
# the part of the LAN switch; each player is wired to it with a veth pair:
#
#   namespace          interface   address
#   sf-server0         eth0        10.213.0.10/24  --+
#   sf-server1         eth0        10.213.0.11/24  --|
#   sf-server2         eth0        10.213.0.12/24  --|
#   sf-model-owner     eth0        10.213.0.13/24  --+-- port0..port6 of
#   sf-data-owner-0    eth0        10.213.0.14/24  --|   bridge sfbr0 in
#   sf-data-owner-1    eth0        10.213.0.15/24  --|   namespace sf-switch
#   sf-data-owner-2    eth0        10.213.0.16/24  --+   (no address)
#
# With --wan-delay there is no bridge and no veth pair: wandelay runs in
# sf-switch, makes one TUN device there per player (sfwan0..sfwan6), and
# the script moves each into its player's namespace as eth0. A packet a
# player sends leaves through its eth0 into wandelay, which writes it to
# the eth0 of the player with the destination address D later: netem's
# 'delay D' done in user space, for kernels without sch_netem. Bandwidth
# is not limited, and every packet pays wandelay's read and write on top
# of D.
#
# Nothing is created in the root namespace: the veth pairs (or TUN
# devices) are made inside sf-switch with their other end placed straight
# into the player's namespace. There is no default route and no NAT, so a player can reach
# only the other six players (and its own loopback); nothing is forwarded
# to or from the host's network. IPv6 is switched off in every namespace,
# so the links carry nothing but the players' IPv4 traffic.
#
# The script builds the example and the shareflow CLI, writes hosts.json
# with the players' namespace addresses, makes development certificates
# for them (shareflow certs), starts every player inside its namespace with
# mutual TLS, prefixes each output line with [NAME], and waits for all.
# When a player fails, the others are stopped, as internal/launch does.
# At the end it prints the bytes each player moved through its switch port
# (with --wan-delay: through its eth0), and with --iteration-times the time
# of each iteration as the model owner saw it: from its "connected" line to
# its first progress line, and from one progress line to the next.
#
# Exit status: 0 when every player succeeded, 1 when one failed, 2 when
# the script cannot run here (not root, no 'ip netns', no privilege to
# create namespaces, with --wan-delay no TUN devices, bad arguments,
# another run still going after LOCK_WAIT seconds).
#
# Everything (processes, namespaces, bridge, veths, temporary files) is
# removed on exit, also after a failure or Ctrl-C; leftovers of a run that
# was killed outright (SIGKILL) are removed at the start of the next one.
# Set GO to the go binary if 'go' is not on root's PATH (sudo resets it).

set -euo pipefail

# ip lives in /usr/sbin or /sbin, which some ways of becoming root leave
# off PATH.
PATH=$PATH:/usr/sbin:/sbin
# A decimal point in $EPOCHREALTIME, whatever the user's locale.
export LC_NUMERIC=C

# ---- Settings ---------------------------------------------------------------

readonly DEFAULT_ITERATIONS=30
readonly SUBNET_PREFIX=10.213.0 # private test subnet 10.213.0.0/24
readonly FIRST_HOST=10          # players get .10, .11, ... in PLAYERS order
readonly PORT=4440
readonly SWITCH_NS=sf-switch
readonly BRIDGE=sfbr0
readonly TUN_PREFIX=sfwan # --wan-delay: TUN devices sfwan0, sfwan1, ... in PLAYERS order
readonly TUN_WAIT=30      # seconds to wait for wandelay to make its devices
# Packets a TUN device queues for wandelay. The kernel's default of 500
# overflows when a burst of several links arrives while wandelay waits
# for the CPU, and the losses then stall TCP; a router has deeper buffers.
readonly TUN_QUEUE=10000
readonly STOP_GRACE=5 # seconds between SIGTERM and SIGKILL when stopping players
readonly LOCK_WAIT=90 # seconds to wait for another run of this script to end
readonly PLAYERS=(server0 server1 server2 model-owner data-owner-0 data-owner-1 data-owner-2)

# ns NAME: the network namespace of player NAME.
ns() { printf 'sf-%s' "$1"; }

# addr INDEX: the IPv4 address of the player at INDEX of PLAYERS.
addr() { printf '%s.%d' "$SUBNET_PREFIX" $((FIRST_HOST + $1)); }

# Every namespace this script owns, players first: the only ones it ever
# deletes.
ALL_NS=()
for p in "${PLAYERS[@]}"; do ALL_NS+=("$(ns "$p")"); done
ALL_NS+=("$SWITCH_NS")
readonly ALL_NS

# say MESSAGE...: a line of the script's own, told apart from the players'.
say() { printf '[netns] %s\n' "$*"; }

# indent: the script's own detail lines, indented under a say line
# (trailing blanks dropped).
indent() { sed 's/^/[netns]   /; s/[[:space:]]*$//'; }

# refuse MESSAGE...: the script cannot run here; exit status 2.
refuse() {
	printf 'netns-demo: %s\n' "$*" >&2
	exit 2
}

usage() {
	cat <<EOF
Usage: $0 [--wan-delay D] [--iteration-times] [ITERATIONS] [PLAYER FLAGS...]

Runs examples/federated-learning as seven hosts, one Linux network namespace
per player, wired to a bridge in namespace $SWITCH_NS on ${SUBNET_PREFIX}.0/24.
Needs root. ITERATIONS defaults to $DEFAULT_ITERATIONS; PLAYER FLAGS go to every player.

  --wan-delay D      delay every packet by D one way (e.g. 20ms: a 40 ms round
                     trip), through scripts/wandelay and TUN devices
  --iteration-times  print the time of each iteration of the model owner
EOF
}

# ---- Arguments and preconditions ----------------------------------------------

all_args=("$@")
iterations=$DEFAULT_ITERATIONS
wan_delay=""
iteration_times=false
while [[ $# -gt 0 ]]; do
	case $1 in
	-h | --help)
		usage
		exit 0
		;;
	--wan-delay)
		[[ $# -ge 2 ]] || refuse "--wan-delay needs a duration, e.g. --wan-delay 20ms"
		wan_delay=$2
		shift 2
		;;
	--wan-delay=*)
		wan_delay=${1#*=}
		shift
		;;
	--iteration-times)
		iteration_times=true
		shift
		;;
	*) break ;;
	esac
done
if [[ -n $wan_delay && ! $wan_delay =~ ^[0-9]+(\.[0-9]+)?(us|ms|s)$ ]]; then
	refuse "--wan-delay must be a duration such as 20ms, 1.5ms or 200us, not '$wan_delay'"
fi
if [[ $# -gt 0 && $1 == [0-9]* ]]; then
	[[ $1 =~ ^[0-9]+$ && $1 -ge 1 ]] || refuse "ITERATIONS must be a positive integer, not '$1'"
	iterations=$1
	shift
fi
extra_flags=("$@")

[[ $EUID -eq 0 ]] || refuse "must run as root (network namespaces and veth pairs need CAP_SYS_ADMIN and CAP_NET_ADMIN); try: sudo $0 ${all_args[*]}"
command -v ip >/dev/null 2>&1 || refuse "'ip' (iproute2) is not installed"
ip netns list >/dev/null 2>&1 || refuse "'ip netns' is not available here (iproute2 without netns support?)"
if [[ -n $wan_delay && ! -c /dev/net/tun ]]; then
	refuse "--wan-delay needs TUN devices, and /dev/net/tun is missing (try: modprobe tun)"
fi

GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
[[ -x $GO ]] || refuse "no go toolchain found; set GO=/path/to/go (sudo resets PATH)"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO GO

# One run at a time: a second run would tear down the first one's
# namespaces when it removes leftovers. The lock is released when this
# shell exits; players do not inherit it (9>&- where they start), so
# players orphaned by a SIGKILLed run cannot keep it.
lock_file=/run/lock/shareflow-netns-demo.lock
[[ -d /run/lock ]] || lock_file=/tmp/shareflow-netns-demo.lock
exec 9>"$lock_file"
if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
	say "another netns-demo run holds $lock_file; waiting up to ${LOCK_WAIT}s for it to finish"
	flock -w "$LOCK_WAIT" 9 || refuse "another netns-demo run still holds $lock_file after ${LOCK_WAIT}s"
fi

# ---- Tear-down ------------------------------------------------------------------

# existing_ns: the names of this script's namespaces that exist now.
existing_ns() {
	local have
	have=$(ip netns list 2>/dev/null | awk '{print $1}')
	local n
	for n in "${ALL_NS[@]}"; do
		if grep -qxF -- "$n" <<<"$have"; then printf '%s\n' "$n"; fi
	done
}

# signal_players SIGNAL: send SIGNAL to every process inside this script's
# namespaces; those are the players it started (or a killed run left).
signal_players() {
	local n pid
	for n in $(existing_ns); do
		for pid in $(ip netns pids "$n" 2>/dev/null); do
			kill "-$1" "$pid" 2>/dev/null || true
		done
	done
}

# players_alive: whether any process still runs in this script's namespaces.
players_alive() {
	local n
	for n in $(existing_ns); do
		[[ -z $(ip netns pids "$n" 2>/dev/null) ]] || return 0
	done
	return 1
}

# stop_players: SIGTERM every player, SIGKILL those left after STOP_GRACE.
stop_players() {
	players_alive || return 0
	signal_players TERM
	local i
	for ((i = 0; i < STOP_GRACE * 10; i++)); do
		players_alive || return 0
		sleep 0.1
	done
	signal_players KILL
}

# remove_network: delete this script's namespaces. Deleting a player's
# namespace destroys its eth0 and so the veth pair; deleting sf-switch
# destroys the bridge. Nothing else is touched.
remove_network() {
	local n
	for n in $(existing_ns); do
		ip netns del "$n" 2>/dev/null || say "warning: could not delete namespace $n"
	done
}

work=""
cleanup() {
	local status=$?
	set +e
	trap - EXIT INT TERM
	stop_players
	wait 2>/dev/null # the output prefixers end when their player does
	remove_network
	[[ -n $work ]] && rm -rf -- "$work"
	if [[ -n $(existing_ns) ]]; then
		say "warning: namespaces left behind: $(existing_ns | paste -sd ' ')"
	else
		local links="bridge, veth pairs"
		[[ -z $wan_delay ]] || links="wandelay's TUN devices"
		say "cleaned up: namespaces, $links and temporary files removed"
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A run killed outright (SIGKILL, power loss) leaves its namespaces behind.
leftovers=$(existing_ns | paste -sd ' ')
if [[ -n $leftovers ]]; then
	say "removing leftovers of an earlier run: $leftovers"
	stop_players
	remove_network
fi
# Its temporary directory too: under the lock, no other run is using one.
for stale in /tmp/shareflow-netns.*; do
	if [[ -d $stale ]]; then
		say "removing leftovers of an earlier run: $stale"
		rm -rf -- "$stale"
	fi
done

# ---- Network ----------------------------------------------------------------------

# The switch first: it doubles as the probe of whether this machine lets us
# create namespaces at all (a container without CAP_SYS_ADMIN does not).
ip netns add "$SWITCH_NS" 2>/dev/null ||
	refuse "cannot create network namespace $SWITCH_NS (no CAP_SYS_ADMIN, e.g. in an unprivileged container?)"
ip netns exec "$SWITCH_NS" true 2>/dev/null ||
	refuse "cannot enter network namespace $SWITCH_NS with 'ip netns exec' (mount namespaces not permitted?)"

# no_ipv6 NS: IPv4 only in namespace NS, for links and interfaces made
# later too, so no router solicitations or link-local chatter.
no_ipv6() {
	# Net sysctls belong to the namespace of the process that writes them.
	# A kernel without IPv6 has no such files: then there is nothing to do.
	echo 1 | ip netns exec "$1" tee /proc/sys/net/ipv6/conf/{all,default}/disable_ipv6 >/dev/null 2>&1 || true
}

no_ipv6 "$SWITCH_NS"
work=$(mktemp -d /tmp/shareflow-netns.XXXXXX)

wandelay_pid=""
if [[ -n $wan_delay ]]; then
	# wandelay makes the TUN devices in sf-switch, so they are born with
	# IPv6 off, and holds them for as long as it runs.
	readonly WANDELAY_BIN=$work/bin/wandelay WANDELAY_LOG=$work/wandelay.log
	say "building scripts/wandelay in $work/bin"
	(cd "$REPO" && "$GO" build -o "$WANDELAY_BIN" ./scripts/wandelay)
	devices=()
	for i in "${!PLAYERS[@]}"; do devices+=("$TUN_PREFIX$i=$(addr "$i")"); done
	# It runs at a higher priority than the players, as a router is
	# hardware of its own: the delay should be the one asked for, not
	# more when the players keep the CPUs busy.
	nice -n -10 ip netns exec "$SWITCH_NS" "$WANDELAY_BIN" -delay "$wan_delay" "${devices[@]}" >"$WANDELAY_LOG" 2>&1 9>&- &
	wandelay_pid=$!
	for ((i = 0; i < TUN_WAIT * 10; i++)); do
		grep -q '^wandelay: ready' "$WANDELAY_LOG" && break
		kill -0 "$wandelay_pid" 2>/dev/null || break
		sleep 0.1
	done
	if ! grep -q '^wandelay: ready' "$WANDELAY_LOG"; then
		refuse "wandelay did not make its TUN devices: $(tail -n 3 "$WANDELAY_LOG")"
	fi
else
	ip -n "$SWITCH_NS" link add "$BRIDGE" type bridge ||
		refuse "cannot create a Linux bridge (is the bridge kernel module available?)"
	ip -n "$SWITCH_NS" link set "$BRIDGE" up
fi

for i in "${!PLAYERS[@]}"; do
	player=${PLAYERS[$i]}
	n=$(ns "$player")
	ip netns add "$n"
	no_ipv6 "$n"
	ip -n "$n" link set lo up
	if [[ -n $wan_delay ]]; then
		# wandelay's device for this player moves into its namespace.
		ip -n "$SWITCH_NS" link set dev "$TUN_PREFIX$i" txqueuelen "$TUN_QUEUE"
		ip -n "$SWITCH_NS" link set dev "$TUN_PREFIX$i" netns "$n" name eth0
	else
		# The veth pair is born in the switch namespace; its player end
		# moves straight into the player's namespace as eth0.
		ip -n "$SWITCH_NS" link add "port$i" type veth peer name eth0 netns "$n"
		ip -n "$SWITCH_NS" link set "port$i" master "$BRIDGE" up
	fi
	# Only the connected route of the /24 results: no default route.
	ip -n "$n" addr add "$(addr "$i")/24" dev eth0
	ip -n "$n" link set eth0 up
done

if [[ -n $wan_delay ]]; then
	say "topology: wandelay in namespace $SWITCH_NS delays every packet by $wan_delay one way; one namespace per player:"
	for i in "${!PLAYERS[@]}"; do
		printf '[netns]   %-16s eth0 %-14s <-> wandelay (TUN device %s%d)\n' "$(ns "${PLAYERS[$i]}")" "$(addr "$i")/24" "$TUN_PREFIX" "$i"
	done
	indent <"$WANDELAY_LOG"
else
	say "topology: bridge $BRIDGE in namespace $SWITCH_NS (no address), one namespace per player:"
	for i in "${!PLAYERS[@]}"; do
		printf '[netns]   %-16s eth0 %-14s <-> %s port%d\n' "$(ns "${PLAYERS[$i]}")" "$(addr "$i")/24" "$SWITCH_NS" "$i"
	done
fi
say "routes in $(ns server0) (the same in every player namespace):"
ip -n "$(ns server0)" route | indent
# No way out: an address beyond the subnet (TEST-NET-2) has no route.
if outside=$(ip -n "$(ns server0)" route get 198.51.100.1 2>&1); then
	refuse "$(ns server0) has a route beyond the test subnet: $outside"
fi
say "route from $(ns server0) to 198.51.100.1 (outside the subnet): $outside"

# ---- Build -------------------------------------------------------------------------

readonly EXAMPLE_BIN=$work/bin/federated-learning CLI_BIN=$work/bin/shareflow
say "building the example and the shareflow CLI in $work/bin"
(cd "$REPO" && "$GO" build -o "$EXAMPLE_BIN" ./examples/federated-learning)
(cd "$REPO" && "$GO" build -o "$CLI_BIN" ./cmd/shareflow)

# ---- Hosts file and certificates ----------------------------------------------

# The extended form of TF Encrypted's hostmap: player -> its namespace's
# address. Each player listens on its own address, which exists only
# inside its namespace.
{
	printf '{\n  "players": {\n'
	for i in "${!PLAYERS[@]}"; do
		sep=,
		[[ $i -eq $((${#PLAYERS[@]} - 1)) ]] && sep=
		printf '    "%s": "%s:%d"%s\n' "${PLAYERS[$i]}" "$(addr "$i")" "$PORT" "$sep"
	done
	printf '  },\n  "connect_timeout": "30s",\n  "message_timeout": "30s"\n}\n'
} >"$work/hosts.json"
say "hosts file $work/hosts.json:"
indent <"$work/hosts.json"

say "making development certificates (IP SANs from the hosts file)"
"$CLI_BIN" certs --config "$work/hosts.json" --out "$work/certs" | indent

# ---- Run ----------------------------------------------------------------------------

# prefix NAME [STAMPS]: copy standard input to standard output, each line
# prefixed "[NAME] " (as internal/launch does for local runs). With STAMPS,
# also append each line to that file after the time it arrived, in
# seconds since the epoch.
prefix() {
	local line
	while IFS= read -r line || [[ -n $line ]]; do
		[[ -z ${2:-} ]] || printf '%s %s\n' "$EPOCHREALTIME" "$line" >>"$2"
		printf '[%s] %s\n' "$1" "$line"
	done
}

# The model owner's lines, time-stamped, for --iteration-times.
readonly STAMPS=$work/model-owner.stamps

# run_player NAME: run player NAME inside its namespace; the exit status
# is the player's. With --iteration-times the model owner shows its
# progress, one line an iteration (up to 19), and its lines are stamped.
run_player() {
	local quiet=(--quiet) stamps=""
	if [[ $iteration_times == true && $1 == model-owner ]]; then
		quiet=() stamps=$STAMPS
	fi
	ip netns exec "$(ns "$1")" "$EXAMPLE_BIN" \
		--config "$work/hosts.json" --player "$1" --certs "$work/certs" \
		--iterations "$iterations" "${quiet[@]}" "${extra_flags[@]}" 9>&- 2>&1 | prefix "$1" "$stamps"
	return "${PIPESTATUS[0]}"
}

say "starting ${#PLAYERS[@]} players, $iterations iterations${extra_flags[*]:+, flags: ${extra_flags[*]}}"
declare -A player_of=() # background job pid -> player
for player in "${PLAYERS[@]}"; do
	run_player "$player" 9>&- &
	player_of[$!]=$player
done

# Wait for every player. The first failure stops the others, which would
# otherwise wait out their message timeout for a peer that is gone.
declare -A status_of=()
failed=""
while [[ ${#player_of[@]} -gt 0 ]]; do
	finished="" status=0
	wait -n -p finished "${!player_of[@]}" || status=$?
	[[ -n $finished ]] || continue
	status_of[${player_of[$finished]}]=$status
	if [[ $status -ne 0 && -z $failed ]]; then
		failed=${player_of[$finished]}
		say "player $failed failed (exit status $status); stopping the others"
		stop_players
	fi
	unset "player_of[$finished]"
done

# ---- Report ---------------------------------------------------------------------

# mb BYTES: BYTES in megabytes, one decimal (kilobytes below 1 MB); "-"
# for no number (a device already gone).
mb() { awk -v b="$1" 'BEGIN { if (b == "") print "-"; else if (b < 1e6) printf "%.1f kB", b / 1e3; else printf "%.1f MB", b / 1e6 }'; }

# Traffic each player put on the wire, read from its switch port: what the
# port received the player sent, and the other way round. With
# --wan-delay, read from the player's own eth0 (IP packets, no Ethernet
# headers), whose far end is wandelay.
if [[ -n $wan_delay ]]; then
	say "traffic through each player's eth0 (all of it between the namespaces above, through wandelay):"
else
	say "traffic through the switch ports (all of it between the namespaces above):"
fi
printf '[netns]   %-14s %-14s %12s %12s\n' PLAYER ADDRESS SENT RECEIVED
for i in "${!PLAYERS[@]}"; do
	if [[ -n $wan_delay ]]; then
		stats=/sys/class/net/eth0/statistics
		# After a failure, stopping the players stopped wandelay too, and
		# its devices are gone.
		sent=$(ip netns exec "$(ns "${PLAYERS[$i]}")" cat "$stats/tx_bytes" 2>/dev/null) || sent=""
		received=$(ip netns exec "$(ns "${PLAYERS[$i]}")" cat "$stats/rx_bytes" 2>/dev/null) || received=""
	else
		stats=/sys/class/net/port$i/statistics
		sent=$(ip netns exec "$SWITCH_NS" cat "$stats/rx_bytes")
		received=$(ip netns exec "$SWITCH_NS" cat "$stats/tx_bytes")
	fi
	printf '[netns]   %-14s %-14s %12s %12s\n' "${PLAYERS[$i]}" "$(addr "$i")" "$(mb "$sent")" "$(mb "$received")"
done

if [[ -n $wandelay_pid ]]; then
	# Packets the kernel dropped on the way into wandelay: a TUN device's
	# queue (txqueuelen) overflows when wandelay reads too slowly. Read
	# before wandelay stops, which removes the devices.
	tun_drops=0
	for p in "${PLAYERS[@]}"; do
		d=$(ip netns exec "$(ns "$p")" cat /sys/class/net/eth0/statistics/tx_dropped 2>/dev/null) || d=0
		tun_drops=$((tun_drops + d))
	done
	say "packets dropped by the players' TUN devices (wandelay reading too slowly): $tun_drops"
	# Its counters: what it forwarded, and whether a queue overflowed.
	kill -TERM "$wandelay_pid" 2>/dev/null || true
	wait "$wandelay_pid" 2>/dev/null || true
	say "wandelay:"
	grep -v '^wandelay: ready' "$WANDELAY_LOG" | indent
fi

if [[ $iteration_times == true && -s $STAMPS ]]; then
	# From the model owner's "connected; running" line to its first
	# progress line is iteration 1 (with the session's first exchange of
	# plan fingerprints); between progress lines k and m are iterations
	# k+1..m.
	say "iteration times of the model owner (from the arrival of its lines):"
	LC_ALL=C awk -v indent='[netns]   ' '
		/connected; running [0-9]+ iterations/ { last = $1; done = 0; next }
		last != "" && match($0, /secure: iteration [0-9]+\//) {
			split(substr($0, RSTART, RLENGTH), w, /[ \/]/)
			k = w[3] + 0
			ms = ($1 - last) * 1000 / (k - done)
			if (k - done == 1) printf "%siteration %3d  %7.1f ms\n", indent, k, ms
			else printf "%siterations %d-%d  %7.1f ms each\n", indent, done + 1, k, ms
			at[k] = $1
			last = $1; done = k
		}
		END {
			if (5 in at && done > 5)
				printf "%siterations 6-%d: %.1f ms per iteration\n", indent, done, (at[done] - at[5]) * 1000 / (done - 5)
		}' "$STAMPS"
fi

say "player exit statuses:"
for player in "${PLAYERS[@]}"; do
	printf '[netns]   %-14s %s\n' "$player" "${status_of[$player]:-?}"
done
if [[ -n $failed ]]; then
	say "FAILED: player $failed failed first"
	exit 1
fi
say "all ${#PLAYERS[@]} players finished"
