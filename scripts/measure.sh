#!/usr/bin/env bash
# measure.sh: measure again every figure the READMEs quote (issue #11), one
# command after another, and write one line per figure:
#
#   FIGURE | VALUE(S) | COMMAND | load 1-min BEFORE → AFTER | SECONDS | WHERE
#
# to standard output and to a results file. FIGURE names the figure as the
# documentation does, WHERE says where it is quoted, COMMAND is the command
# that gives it (the README's form: a `go run ./examples/...` is run as a
# binary built once at the start, so compiling is not in its time), load is
# the 1-minute load average (uptime) before and after the command, and
# SECONDS is how long the command took, compiling included for `go test`.
# One command often gives several figures: they share its load and seconds.
#
# Usage:
#
#   scripts/measure.sh [--quick | --full] [--wait-idle MINUTES] [--out FILE]
#                      [--only REGEX] [--list]
#
#   --quick         the cheap figures only (81 s on 2 cores at load 0.3-3
#                   with the test binaries in the build cache; a few minutes
#                   when they must be compiled)
#   (default)       every figure that needs neither root nor a 2,000-iteration
#                   training run on the full Fashion-MNIST (estimated 10-15
#                   minutes; its steps are listed in docs/MEASURE.md)
#   --full          also those training runs and the network-namespace demos,
#                   which need root (estimated 12-15 minutes more)
#   --wait-idle M   before each command, wait until the 1-minute load
#                   average is below 1.0, at most M minutes, then run anyway
#                   (the line says how long it waited and the load it found)
#   --out FILE      the results file (default /tmp/measure-DATE.txt); every
#                   command's whole output is kept in FILE's name with .logs
#   --only REGEX    run only the steps whose name matches REGEX (see --list)
#   --list          list the steps with their tier, and exit
#
# Commands run one at a time, never in parallel: the machine has 2 cores.
# Full Fashion-MNIST comes from the Debian package dataset-fashion-mnist
# (/usr/share/datasets/fashion-mnist, or $FASHION_MNIST); nothing is
# downloaded. Steps that need it say SKIPPED when it is missing.
#
# Exit status: 0 when every command ran and gave its figures, 1 when some
# failed or printed no figure (their lines say FAILED or NOT FOUND and name
# the log), 2 on bad arguments.
#
# docs/MEASURE.md lists every figure with its command and the README line
# that quotes it, and the figures no command in the repository gives.

set -uo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FMNIST=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
IDLE_LOAD=1.0

usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

refuse() {
	printf 'measure: %s\n' "$*" >&2
	exit 2
}

tier=default
wait_idle=0
out=""
only=""
list=false
while [[ $# -gt 0 ]]; do
	case $1 in
	-h | --help)
		usage
		exit 0
		;;
	--quick) tier=quick ;;
	--full) tier=full ;;
	--wait-idle)
		[[ $# -ge 2 && $2 =~ ^[0-9]+$ ]] || refuse "--wait-idle needs a number of minutes, e.g. --wait-idle 10"
		wait_idle=$2
		shift
		;;
	--out)
		[[ $# -ge 2 ]] || refuse "--out needs a file name"
		out=$2
		shift
		;;
	--only)
		[[ $# -ge 2 ]] || refuse "--only needs a regular expression"
		only=$2
		shift
		;;
	--list) list=true ;;
	*) refuse "unknown argument '$1' (see --help)" ;;
	esac
	shift
done

# ---- Steps --------------------------------------------------------------------
#
# Each step is a function m_NAME with a tier: quick steps run in every mode,
# default steps in the default mode and --full, full steps only in --full.

STEPS=()
step() { STEPS+=("$1:$2"); } # step TIER NAME

# ---- Helpers ------------------------------------------------------------------

load1() { cut -d' ' -f1 /proc/loadavg; }

# waitidle: with --wait-idle, wait for a 1-minute load below IDLE_LOAD, at
# most wait_idle minutes; sets WAITED to what it did.
waitidle() {
	WAITED=""
	((wait_idle > 0)) || return 0
	local start=$SECONDS deadline=$((SECONDS + 60 * wait_idle))
	while awk -v l="$(load1)" -v max=$IDLE_LOAD 'BEGIN { exit !(l >= max) }'; do
		if ((SECONDS >= deadline)); then
			WAITED=" (waited ${wait_idle} min, still busy)"
			return 0
		fi
		sleep 10
	done
	((SECONDS > start)) && WAITED=" (waited $((SECONDS - start)) s)"
	return 0
}

# run NAME DISPLAY -- CMD...: runs CMD in the repository (after waiting
# for an idle machine if asked), its output into the log NAME.log, and sets
# R_LOG, R_RC, R_CMD (DISPLAY), R_LOAD and R_SECS for emit.
run() {
	local name=$1 display=$2
	shift 3
	waitidle
	local before t0
	before=$(load1)
	R_LOG=$LOGS/$name.log
	{
		echo "# $display"
		echo "# running: $*"
		echo "# before: $(uptime)"
	} >"$R_LOG"
	printf 'measure: %s: %s\n' "$name" "$display" >&2
	t0=$EPOCHREALTIME
	(cd "$ROOT" && "$@") >>"$R_LOG" 2>&1
	R_RC=$?
	R_SECS=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
	echo "# after: $(uptime); exit status $R_RC; $R_SECS s" >>"$R_LOG"
	R_CMD=$display
	R_LOAD="$before → $(load1)$WAITED"
}

# emit FIGURE WHERE VALUE: one line for a figure of the last run.
emit() {
	local v=$3
	if [[ $R_RC -ne 0 ]]; then
		v="FAILED (exit status $R_RC, see $R_LOG)${v:+; printed: $v}"
		FAILURES=$((FAILURES + 1))
	elif [[ -z $v ]]; then
		v="NOT FOUND in the output (see $R_LOG)"
		FAILURES=$((FAILURES + 1))
	fi
	printf '%s | %s | %s | load %s | %s s | %s\n' "$1" "$v" "$R_CMD" "$R_LOAD" "$R_SECS" "$2" | tee -a "$OUT"
}

# skip FIGURE WHERE WHY: a figure this run could not measure.
skip() {
	printf '%s | SKIPPED: %s | - | - | - | %s\n' "$1" "$3" "$2" | tee -a "$OUT"
}

# The awk functions every parser shares: f formats a number (3 significant
# digits, whole numbers from 1000 on), range formats a list of runs as
# "v" or "lo–hi (n runs)", bytes reads "3.26 MB" as a number.
AWKLIB='
function f(v) { return (v >= 1000 || v <= -1000) ? sprintf("%.0f", v) : sprintf("%.3g", v) }
function range(vals, n,   i, lo, hi) {
	if (n == 0) return ""
	lo = hi = vals[1]
	for (i = 2; i <= n; i++) { if (vals[i] < lo) lo = vals[i]; if (vals[i] > hi) hi = vals[i] }
	if (n == 1) return f(lo)
	if (f(lo) == f(hi)) return f(lo) " (" n " runs)"
	return f(lo) "–" f(hi) " (" n " runs)"
}
function bytes(num, unit) {
	return num * (unit == "kB" ? 1e3 : unit == "MB" ? 1e6 : unit == "GB" ? 1e9 : 1)
}
function mb(b) { return b >= 1e6 ? f(b / 1e6) " MB" : f(b / 1e3) " kB" }
'

# bench LOG NAME UNIT [SCALE] [SUFFIX]: the values of metric UNIT on the
# result lines of benchmark NAME (its -N suffix dropped), divided by SCALE,
# as a range over the runs, followed by SUFFIX.
bench() {
	awk -v name="$2" -v unit="$3" -v scale="${4:-1}" -v suffix="${5:-}" "$AWKLIB"'
	$1 ~ /^Benchmark/ {
		n = $1; sub(/-[0-9]+$/, "", n)
		if (n != name) next
		for (i = 3; i < NF; i += 2) if ($(i + 1) == unit) vals[++k] = $i / scale
	}
	END { r = range(vals, k); if (r != "") print r suffix }' "$1"
}

# ms LOG NAME: a benchmark's time per op in ms.
ms() { bench "$1" "$2" ns/op 1e6 " ms"; }

# grab LOG REGEX [SED]: the first line matching REGEX, through sed
# expression SED (default: the line with leading blanks dropped).
grab() {
	grep -m1 -E -- "$2" "$1" | sed -E "${3:-s/^[[:space:]]+//}"
}

# freeports: seven consecutive free TCP ports on 127.0.0.1, as BASE.
freeports() {
	local try base
	for try in {1..50}; do
		base=$((20000 + RANDOM % 30000))
		if ! ss -Htln 2>/dev/null | awk -v lo=$base -v hi=$((base + 6)) '{ n = split($4, a, ":"); p = a[n] + 0; if (p >= lo && p <= hi) found = 1 } END { exit !found }'; then
			echo "$base"
			return 0
		fi
	done
	return 1
}

# hostsfile DIR: writes DIR/hosts.json for seven players on loopback and
# makes their development certificates in DIR/certs.
hostsfile() {
	local dir=$1 base
	mkdir -p "$dir"
	base=$(freeports) || return 1
	cat >"$dir/hosts.json" <<JSON
{"server0": "127.0.0.1:$base", "server1": "127.0.0.1:$((base + 1))", "server2": "127.0.0.1:$((base + 2))",
 "model-owner": "127.0.0.1:$((base + 3))", "data-owner-0": "127.0.0.1:$((base + 4))",
 "data-owner-1": "127.0.0.1:$((base + 5))", "data-owner-2": "127.0.0.1:$((base + 6))"}
JSON
	"$BIN/shareflow" certs --config "$dir/hosts.json" >"$dir/certs.log" 2>&1
}

have_fmnist() { [[ -r $FMNIST/train-images-idx3-ubyte.gz || -r $FMNIST/train-images-idx3-ubyte ]]; }
NO_FMNIST="no full Fashion-MNIST at $FMNIST (apt-get install dataset-fashion-mnist, or set FASHION_MNIST)"

# ---- Parsers of the examples' output ------------------------------------------

# fl_figures LABEL WHERE: the figures of a federated-learning run in one
# process (with --compare: both runs and their ratio).
fl_figures() {
	local label=$1 where=$2
	if grep -q 'cost of secure aggregation' "$R_LOG"; then
		emit "$label: test accuracy, secure / plaintext" "$where" \
			"$(grab "$R_LOG" 'test accuracy: secure' 's/.*test accuracy: secure ([0-9.]+), plaintext ([0-9.]+).*/\1 \/ \2/')"
		emit "$label: time per iteration, secure / plaintext" "$where" \
			"$(grab "$R_LOG" 'time per iteration: secure' 's/.*secure ([^ ]+) \/ plaintext ([^ ]+) = ([0-9.]+).*/\1 \/ \2 = \3/')"
	else
		emit "$label: test accuracy" "$where" "$(grab "$R_LOG" '^  test accuracy' 's/.*test accuracy ([0-9.]+).*/\1/')"
		emit "$label: time per iteration (evaluation excluded)" "$where" \
			"$(grab "$R_LOG" '^secure training' 's/.*, ([^ ]+) per (iteration|round).*/\1 per \2/')"
	fi
}

# fl_rounds LABEL WHERE: the rounds summary of the secure run.
fl_rounds() {
	emit "$1: rounds" "$2" "$(grab "$R_LOG" '^  rounds:' 's/^  rounds: //')"
}

# fl_bytes LABEL WHERE: the secure run's bytes per iteration, in all and by
# link.
fl_bytes() {
	emit "$1: bytes per iteration, in all" "$2" \
		"$(awk '/^secure training/ { s = 1 } s && $1 == "total" { print $2, $3; exit }' "$R_LOG")"
	emit "$1: bytes per iteration, by link" "$2" \
		"$(awk '/^secure training/ { s = 1 } /^plaintext training/ { s = 0 } s && $2 == "->" { printf "%s%s→%s %s %s", sep, $1, $3, $4, $5; sep = ", " } END { print "" }' "$R_LOG")"
}

# pp_figures LABEL WHERE: the figures of a private prediction in one
# process.
pp_figures() {
	local label=$1 where=$2
	emit "$label: same class as the plaintext network" "$where" \
		"$(grab "$R_LOG" 'same class as the plaintext network' 's/.*network: //')"
	emit "$label: accuracy, private / plaintext" "$where" \
		"$(grab "$R_LOG" 'accuracy: private' 's/.*private ([0-9.]+), plaintext ([0-9.]+).*/\1 \/ \2/')"
	emit "$label: against the fixed-point emulation" "$where" \
		"$(grab "$R_LOG" 'against the fixed-point emulation' 's/.*emulation: //')"
	emit "$label: time per batch, private / plaintext" "$where" \
		"$(grab "$R_LOG" 'time per batch of' 's/.*time per batch of ([0-9]+): private ([^,]+), plaintext ([^:]+): ([0-9.]+) times.*/\2 \/ \3 = \4 (batch of \1)/')"
	emit "$label: bytes per batch, by player (sent / received)" "$where" \
		"$(awk '/bytes per batch, by player/ { s = 1; next } /bytes per batch, by link/ { s = 0 }
			s && $2 == "sent" { sub(/,$/, "", $4); printf "%s%s %s %s / %s %s", sep, $1, $3, $4, $6, $7; sep = ", " } END { print "" }' "$R_LOG")"
	emit "$label: bytes per batch, in all; between the two servers" "$where" \
		"$(awk "$AWKLIB"'/bytes per batch, by link/ { s = 1; next }
			s && $2 == "->" { if ($1 ~ /^server[01]$/ && $3 ~ /^server[01]$/) between += bytes($4, $5) }
			s && $1 == "total" { printf "%s %s; %s between server0 and server1\n", $2, $3, mb(between); exit }' "$R_LOG")"
}

# pp_plaintext WHERE: the figures of private-prediction --plaintext.
pp_plaintext() {
	emit "private prediction: the polynomial's maximum error on [-14, 14]" "$1" \
		"$(grab "$R_LOG" '^sigmoid:' 's/.*(max error [^;]+);.*/\1/')"
	local set
	while IFS= read -r set; do
		emit "private prediction --plaintext, $set" "$1; examples/private-prediction/README.md:40-44,100-103,147-155,163-166" \
			"$(awk -v set="$set" '
				index($0, set ", ") == 1 { s = 1; sub(/.*: /, ""); printf "%s", $0; next }
				s && /^  accuracy:/ { sub(/^  accuracy: /, ""); printf "; accuracy %s", $0; next }
				s && /^  agreement/ { sub(/.*prediction: /, ""); printf "; agreement %s", $0; next }
				s && /^  fixed point:/ { sub(/^  fixed point: /, ""); printf "; fixed point: %s", $0; exit }' "$R_LOG")"
	done < <(grep -E '^[a-z].*, [0-9]+ images: max \|z\|' "$R_LOG" | sed -E 's/, [0-9]+ images: .*//')
}

# ---- The measurements ---------------------------------------------------------

step quick build
m_build() {
	run build "go build ./examples/federated-learning ./examples/private-prediction ./cmd/shareflow (warm cache)" -- \
		bash -c "go build -o '$BIN/fl' ./examples/federated-learning && go build -o '$BIN/pp' ./examples/private-prediction && go build -o '$BIN/shareflow' ./cmd/shareflow"
	emit "build of the three programs" "(not a README figure: the programs every later step runs)" "$([[ $R_RC -eq 0 ]] && echo "built in $R_SECS s")"
	[[ $R_RC -eq 0 ]]
}

step quick session-mean
m_session-mean() {
	run session-mean "go test -run '^\$' -bench Mean -count $COUNT ./session" -- \
		go test -run '^$' -bench Mean -count "$COUNT" ./session
	local w="README.md:211-217 (\"takes 3.3 ms against 1.47 ms\")"
	emit "secure mean of 3 × 407,050 (clear division)" "$w" "$(ms "$R_LOG" BenchmarkSecureMean/clear-division)"
	emit "secure mean of 3 × 407,050 (interactive truncation)" "$w" "$(ms "$R_LOG" BenchmarkSecureMean/interactive-truncation)"
	emit "plaintext mean of 3 × 407,050" "$w" "$(ms "$R_LOG" BenchmarkPlaintextMean)"
	emit "secure mean: bytes per iteration" "$w" "$(bench "$R_LOG" BenchmarkSecureMean/clear-division MB/iter 1 " MB")"
}

step quick session-matmul
m_session-matmul() {
	run session-matmul "go test -run '^\$' -bench MatMul -benchtime 5x -count $COUNT ./session" -- \
		go test -run '^$' -bench MatMul -benchtime 5x -count "$COUNT" ./session
	local w="README.md:86-90; protocol/pond/README.md:382-388"
	local b=BenchmarkMatMul/secure
	emit "100×784 · 784×512 in a local session: secure / float64" "$w" "$(ms "$R_LOG" $b) / $(ms "$R_LOG" BenchmarkMatMul/plaintext)"
	emit "100×784 · 784×512: server2's triple (time, bytes)" "$w" "$(bench "$R_LOG" $b triple-ms 1 " ms"), $(bench "$R_LOG" $b triple-MB 1 " MB")"
	emit "100×784 · 784×512: server0's online step (time; bytes between the servers)" "$w" "$(bench "$R_LOG" $b online-ms 1 " ms"); $(bench "$R_LOG" $b online-MB 1 " MB")"
	emit "100×784 · 784×512: bytes per iteration, in all" "$w" "$(bench "$R_LOG" $b MB/iter 1 " MB")"
}

step quick ring-matmul
m_ring-matmul() {
	run ring-matmul "go test -run '^\$' -bench MatMul -count $COUNT5 ./ops ./protocol/pond" -- \
		go test -run '^$' -bench MatMul -count "$COUNT5" ./ops ./protocol/pond
	local w="protocol/pond/README.md:365-377 (best of 5)"
	emit "100×784 · 784×512, float64 (ops BenchmarkMatMul/float64)" "$w" "$(ms "$R_LOG" BenchmarkMatMul/float64)"
	emit "100×784 · 784×512, ring ops.MatMul" "$w" "$(ms "$R_LOG" BenchmarkMatMul/ring)"
	emit "100×784 · 784×512, triple on server2" "$w" "$(ms "$R_LOG" BenchmarkSecureMatMul/triple)"
	emit "100×784 · 784×512, expanding both triple messages" "$w" "$(ms "$R_LOG" BenchmarkSecureMatMul/expand)"
	emit "100×784 · 784×512, online step of both servers" "$w" "$(ms "$R_LOG" BenchmarkSecureMatMul/online)"
}

step quick expand
m_expand() {
	run expand "go test -run '^\$' -bench Expand -count $COUNT ./protocol/pond" -- \
		go test -run '^$' -bench Expand -count "$COUNT" ./protocol/pond
	local w="protocol/pond/README.md:102-105"
	local vaes
	vaes=$(bench "$R_LOG" BenchmarkExpand/aes128 MB/s 1000 " GB/s")
	[[ -n $vaes ]] || ! grep -q 'no AVX-512 vector AES' "$R_LOG" || vaes="no VAES on this processor (skipped)"
	emit "3.26 MB mask stream, v2 with the VAES kernel" "$w" "$vaes"
	emit "3.26 MB mask stream, v2 with crypto/aes" "$w" "$(bench "$R_LOG" BenchmarkExpand/aes128-std MB/s 1000 " GB/s")"
	emit "3.26 MB mask stream, v1 (AES-256)" "$w" "$(bench "$R_LOG" BenchmarkExpand/aes256 MB/s 1000 " GB/s")"
}

step quick server-sum
m_server-sum() {
	run server-sum "go test -run '^\$' -bench ServerSum -benchtime 50x -count $COUNT ./protocol/pond" -- \
		go test -run '^$' -bench ServerSum -benchtime 50x -count "$COUNT" ./protocol/pond
	local w="protocol/pond/README.md:111-126" v
	for v in old aes256 aes128-std aes128; do
		local b=BenchmarkServerSum/$v
		emit "server sum of 100 owners × 100k, $v: server; × float64; × float32" "$w" \
			"$(bench "$R_LOG" $b ms-server 1 " ms"); $(bench "$R_LOG" $b x-float64); $(bench "$R_LOG" $b x-float32)"
	done
	emit "plain sums of the same 100 rows: float64; float32" "$w" \
		"$(bench "$R_LOG" BenchmarkServerSum/aes128 ms-float64 1 " ms"); $(bench "$R_LOG" BenchmarkServerSum/aes128 ms-float32 1 " ms")"
}

step quick pp-bench
m_pp-bench() {
	run pp-bench "go test -run '^\$' -bench PrivatePrediction -benchtime 20x -count $COUNT ./examples/private-prediction" -- \
		go test -run '^$' -bench PrivatePrediction -benchtime 20x -count "$COUNT" ./examples/private-prediction
	local w="README.md:222-228; examples/private-prediction/README.md:307-314,324-334"
	local b=BenchmarkPrivatePrediction
	emit "private prediction, batch of 100: wall, private / plaintext = ratio" "$w" \
		"$(ms "$R_LOG" $b) / $(bench "$R_LOG" $b plaintext-ns/op 1e6 " ms") = $(bench "$R_LOG" $b x-plaintext)"
	emit "private prediction, batch of 100: CPU, private / plaintext = ratio" "$w" \
		"$(bench "$R_LOG" $b cpu-ms/op 1 " ms") / $(bench "$R_LOG" $b plaintext-cpu-ms/op 1 " ms") = $(bench "$R_LOG" $b cpu-x-plaintext)"
	emit "private prediction, batch of 100: bytes sent by player, and in all" "$w" \
		"$(awk "$AWKLIB"'$1 ~ /^BenchmarkPrivatePrediction(-[0-9]+)?$/ {
			for (i = 3; i < NF; i += 2) if ($(i + 1) ~ /-sent-B\/op$/) { p = $(i + 1); sub(/-sent-B\/op$/, "", p); out = out sep p " " mb($i); sep = ", "; all += $i }
			print out "; " mb(all) " in all"; exit }' "$R_LOG")"
}

step quick aggbench
m_aggbench() {
	local i runs=4
	[[ $tier == quick ]] && runs=1
	for ((i = 1; i <= runs; i++)); do
		run "aggbench-$i" "go run ./cmd/shareflow bench --iterations 100" -- "$BIN/shareflow" bench --iterations 100
		emit "transport against raw gRPC, 7 processes, run $i of $runs: ratio of medians (aggregation / raw ms)" \
			"docs/RUNNING.md:571-584" \
			"$(grab "$R_LOG" 'MB per iteration; median' 's/^([0-9.]+) MB per iteration; median aggregation ([0-9.]+) ms.*raw gRPC ([0-9.]+) ms.*; ratio ([0-9.]+) \(median of the iterations. ratios ([0-9.]+)\).*/\4 (\2 ms \/ \3 ms; median of ratios \5); \1 MB per iteration/')"
	done
}

step default aggbench-cpu
m_aggbench-cpu() {
	local prof=$WORK/prof
	run aggbench-cpu "go run ./cmd/shareflow bench --iterations 150 --cpuprofile prof; go tool pprof -top -tagfocus path=aggregation|raw prof/*.pprof" -- \
		bash -c "'$BIN/shareflow' bench --iterations 150 --cpuprofile '$prof' && for p in aggregation raw; do echo \"== \$p\"; go tool pprof -top -nodecount 1000000 -tagfocus path=\$p '$prof'/*.pprof 2>&1 | grep -E 'Total samples|Showing nodes'; done"
	emit "CPU across the seven processes, 150 iterations: transport / raw gRPC" "docs/RUNNING.md:580-584" \
		"$(awk '/^== / { p = $2 } /Showing nodes accounting for/ { t = $0; sub(/.*accounting for /, "", t); sub(/,.*/, "", t); v[p] = t }
			/Total samples/ { all = $0; sub(/.*Total samples = /, "", all); sub(/ .*/, "", all) }
			END { if (v["aggregation"] != "") print v["aggregation"] " / " v["raw"] " (of " all " in all)" }' "$R_LOG")"
}

step quick pp-embedded
m_pp-embedded() {
	run pp-embedded "go run ./examples/private-prediction" -- "$BIN/pp" --quiet
	pp_figures "private prediction, embedded 1,000, one process" "README.md:218-222; examples/private-prediction/README.md:284-287,324-334"
}

step quick pp-plaintext
m_pp-plaintext() {
	if [[ $tier != quick ]] && have_fmnist; then
		run pp-plaintext "go run ./examples/private-prediction --plaintext --data $FMNIST" -- "$BIN/pp" --plaintext --data "$FMNIST"
	else
		run pp-plaintext "go run ./examples/private-prediction --plaintext" -- "$BIN/pp" --plaintext
	fi
	pp_plaintext "README.md:205-207; examples/private-prediction/README.md:96-98"
}

step quick classifier
m_classifier() {
	run classifier "stat -c %s; sha256sum examples/private-prediction/classifier.sfw.gz" -- \
		bash -c 'stat -c %s examples/private-prediction/classifier.sfw.gz && sha256sum examples/private-prediction/classifier.sfw.gz'
	emit "classifier.sfw.gz: size, sha256" "examples/private-prediction/README.md:48-49" \
		"$(awk '/^#/ { next } s == "" { s = $1; next } { print s " bytes, " $1; exit }' "$R_LOG")"
}

step quick fl-compare
m_fl-compare() {
	run fl-compare "go run ./examples/federated-learning --compare" -- "$BIN/fl" --compare --quiet
	local w="README.md:162 (table), 201-208 (26 MB); examples/federated-learning/README.md:87-88; docs/RUNNING.md:548-554"
	fl_figures "federated learning, embedded, 400 iterations, rounds" "$w"
	fl_bytes "federated learning, embedded" "$w"
}

step quick fl-skipped
m_fl-skipped() {
	run fl-skipped "go run ./examples/federated-learning --data-owners 5 --sample 4 --dropout 0.3 --min-owners 3 --seed 4 --iterations 6" -- \
		"$BIN/fl" --data-owners 5 --sample 4 --dropout 0.3 --min-owners 3 --seed 4 --iterations 6 --quiet
	fl_rounds "federated learning, 5 owners, sample 4, dropout 0.3, min 3, seed 4, 6 updates" "examples/federated-learning/README.md:198-199"
}

step default compile
m_compile() {
	local cache=$WORK/gocache
	run compile "GOCACHE=(empty) go build ./examples/federated-learning" -- \
		env GOCACHE="$cache" go build -o "$WORK/fl-cold" ./examples/federated-learning
	emit "first run: compiling the example with an empty build cache (modules already downloaded)" "README.md:18-19 (\"about a minute compiling\")" \
		"$([[ $R_RC -eq 0 ]] && echo "$R_SECS s")"
	rm -rf "$cache"
}

step default fl-default
m_fl-default() {
	run fl-default "go run ./examples/federated-learning" -- "$BIN/fl"
	local w="README.md:18-19 (\"trains for about 16 seconds\")"
	emit "federated learning, the default run: wall time of the program (data, training, evaluations)" "$w" "$([[ $R_RC -eq 0 ]] && echo "$R_SECS s")"
	fl_figures "federated learning, the default run" "$w"
}

step default fl-fixed
m_fl-fixed() {
	run fl-fixed "go run ./examples/federated-learning --fixed-owners --compare" -- "$BIN/fl" --fixed-owners --compare --quiet
	fl_figures "federated learning, embedded, --fixed-owners" "README.md:163 (table)"
}

step default fl-sim100
m_fl-sim100() {
	run fl-sim100 "go run ./examples/federated-learning --data-owners 100 --sample 10 --dropout 0.1" -- \
		"$BIN/fl" --data-owners 100 --sample 10 --dropout 0.1 --quiet
	local w="examples/federated-learning/README.md:151-155"
	fl_figures "federated learning, 100 owners, sample 10, dropout 0.1" "$w"
	fl_rounds "federated learning, 100 owners, sample 10, dropout 0.1" "$w"
}

step default fl-shards
m_fl-shards() {
	local seed weighted w="examples/federated-learning/README.md:155-157"
	for seed in 1 2 3; do
		for weighted in "" --weighted; do
			run "fl-shards-$seed${weighted:+-weighted}" "go run ./examples/federated-learning --shard-sizes 0.6,0.3,0.1 --seed $seed${weighted:+ $weighted}" -- \
				"$BIN/fl" --shard-sizes 0.6,0.3,0.1 --seed "$seed" $weighted --quiet
			emit "federated learning, shards 0.6/0.3/0.1, seed $seed, ${weighted:+weighted}${weighted:-unweighted}: test accuracy" "$w" \
				"$(grab "$R_LOG" '^  test accuracy' 's/.*test accuracy ([0-9.]+).*/\1/')"
		done
	done
	for seed in 2 3; do # seed 1 with equal shards is the default run
		run "fl-equal-$seed" "go run ./examples/federated-learning --seed $seed" -- "$BIN/fl" --seed "$seed" --quiet
		emit "federated learning, equal shards, seed $seed: test accuracy" "$w" \
			"$(grab "$R_LOG" '^  test accuracy' 's/.*test accuracy ([0-9.]+).*/\1/')"
	done
}

step default rounds
m_rounds() {
	local w="session/doc.go:202-213; README.md:132-133"
	run round-dropout "go test -run '^\$' -bench RoundDropout -benchtime 5x ./session" -- \
		go test -run '^$' -bench RoundDropout -benchtime 5x ./session
	local c
	for c in none-missing one-fails-fast one-never-answers; do
		emit "round of 10 owners × 100,000, $c: round; CPU" "$w" \
			"$(bench "$R_LOG" BenchmarkRoundDropout/$c round-ms 1 " ms"); $(bench "$R_LOG" BenchmarkRoundDropout/$c cpu-ms/round 1 " ms CPU")"
	done
	run round-server "go test -run '^\$' -bench RoundServerWork -benchtime 1x ./session" -- \
		go test -run '^$' -bench RoundServerWork -benchtime 1x ./session
	for c in 10 100 1000; do
		local b=BenchmarkRoundServerWork/owners=$c
		emit "server0's sum per owner, $c owners × 100,000; round; bytes into server0" "$w" \
			"$(bench "$R_LOG" $b agg-µs/owner 1 " µs/owner"); $(bench "$R_LOG" $b round-ms 1 " ms"); $(bench "$R_LOG" $b MB-in/round 1 " MB")"
	done
}

step default pp-batch1000
m_pp-batch1000() {
	run pp-batch1000 "go run ./examples/private-prediction --batch 1000" -- "$BIN/pp" --batch 1000 --quiet
	local w="examples/private-prediction/README.md:321-322,336-337"
	emit "private prediction, batch of 1,000: time per batch, private / plaintext" "$w" \
		"$(grab "$R_LOG" 'time per batch of' 's/.*: private ([^,]+), plaintext ([^:]+): ([0-9.]+) times.*/\1 \/ \2 = \3/')"
	emit "private prediction, batch of 1,000: bytes per batch" "$w" \
		"$(awk '/bytes per batch, by link/ { s = 1 } s && $1 == "total" { print $2, $3; exit }' "$R_LOG")"
}

step default pp-full
m_pp-full() {
	local w="README.md:218-222; examples/private-prediction/README.md:286-288,318-320; docs/RUNNING.md:270-276"
	if ! have_fmnist; then
		skip "private prediction, full test set" "$w" "$NO_FMNIST"
		return 0
	fi
	local dir=$WORK/pp7
	run pp-full "go run ./examples/private-prediction --data $FMNIST --out one.csv" -- \
		"$BIN/pp" --data "$FMNIST" --out "$WORK/one.csv" --quiet
	pp_figures "private prediction, full test set (10,000), one process" "$w"
	if ! hostsfile "$dir"; then
		skip "private prediction, full test set, seven processes" "$w" "could not write hosts.json and certificates in $dir"
		return 0
	fi
	run pp-seven "go run ./cmd/shareflow launch --config hosts.json -- ./examples/private-prediction --data $FMNIST --images 10000 --out seven.csv" -- \
		"$BIN/shareflow" launch --config "$dir/hosts.json" -- "$BIN/pp" --data "$FMNIST" --images 10000 --out "$WORK/seven.csv" --quiet
	emit "private prediction, full test set, seven processes: the client's result" "$w" \
		"$(grab "$R_LOG" 'images classified privately' 's/.*data-owner-0: //')"
	emit "private prediction, full test set, seven processes: bytes per batch by link" "$w" \
		"$(awk '$3 == "->" && / per batch$/ { sub(/:$/, "", $4); k = $2 "→" $4; if (k in seen) next; seen[k] = 1; printf "%s%s %s %s", sep, k, $5, $6; sep = ", " } END { print "" }' "$R_LOG")"
	if [[ -r $WORK/one.csv && -r $WORK/seven.csv ]]; then
		emit "private prediction, full test set: seven processes against one" "$w" \
			"$(awk -F, 'FNR == 1 { next } NR == FNR { cls[$1] = $3; for (j = 4; j <= NF; j++) lg[$1, j] = $j; next }
				{ n++; if (cls[$1] == $3) same++; for (j = 4; j <= NF; j++) { d = $j - lg[$1, j]; if (d < 0) d = -d; if (d > max) max = d } }
				END { printf "same class on %d of %d images; logits within %.1e\n", same, n, max }' "$WORK/one.csv" "$WORK/seven.csv")"
	fi
}

step default fl-restart
m_fl-restart() {
	run fl-restart "go test -count=1 -run '^TestModelOwnerRestartResumes\$' -v ./examples/federated-learning" -- \
		go test -count=1 -run '^TestModelOwnerRestartResumes$' -v ./examples/federated-learning
	emit "model owner killed after round 105 of 150 and resumed: accuracy uninterrupted, resumed" \
		"docs/RUNNING.md:533-537; examples/federated-learning/README.md:170" \
		"$(grab "$R_LOG" 'uninterrupted, .* resumed' 's/.*accuracy //')"
}

step default memory
m_memory() {
	local w="docs/RUNNING.md:200-218; examples/federated-learning/README.md:275-277" data
	for data in embedded full; do
		local args=() label="embedded subset"
		if [[ $data == full ]]; then
			if ! have_fmnist; then
				skip "peak RSS per player, seven processes, full Fashion-MNIST" "$w" "$NO_FMNIST"
				continue
			fi
			args=(--data "$FMNIST")
			label="full Fashion-MNIST (gzipped)"
		fi
		local dir=$WORK/mem-$data
		if ! hostsfile "$dir"; then
			skip "peak RSS per player, seven processes, $label" "$w" "could not write hosts.json and certificates in $dir"
			continue
		fi
		run "memory-$data" "go run ./cmd/shareflow launch --config hosts.json -- /usr/bin/time -f 'peak RSS %M kB' ./federated-learning ${args[*]} --iterations 3" -- \
			"$BIN/shareflow" launch --config "$dir/hosts.json" -- /usr/bin/time -f 'peak RSS %M kB' "$BIN/fl" "${args[@]}" --iterations 3 --quiet
		emit "peak RSS per player, seven processes, $label, 3 iterations" "$w" \
			"$(awk '/peak RSS [0-9]+ kB/ { p = $1; gsub(/[][]/, "", p); printf "%s%s %.0f MB", sep, p, $(NF - 1) * 1024 / 1e6; sep = ", " } END { print "" }' "$R_LOG")"
	done
}

step default retrain
m_retrain() {
	run retrain "go run ./examples/private-prediction/internal/maketrained -out classifier.sfw.gz (to a temporary file)" -- \
		go run ./examples/private-prediction/internal/maketrained -out "$WORK/classifier.sfw.gz"
	emit "rebuilding classifier.sfw.gz: time; the same bytes as the committed file" "examples/private-prediction/README.md:65-66 (\"about 40 s\")" \
		"$([[ $R_RC -eq 0 ]] && echo "$R_SECS s; $(cmp -s "$WORK/classifier.sfw.gz" "$ROOT/examples/private-prediction/classifier.sfw.gz" && echo "identical" || echo "DIFFERENT (sha256 $(sha256sum <"$WORK/classifier.sfw.gz" | cut -d' ' -f1))")")"
}

step full fl-full
m_fl-full() {
	local w="README.md:160 (table)"
	if ! have_fmnist; then
		skip "federated learning, full Fashion-MNIST" "$w" "$NO_FMNIST"
		return 0
	fi
	run fl-full "go run ./examples/federated-learning --data $FMNIST --iterations 2000 --compare" -- \
		"$BIN/fl" --data "$FMNIST" --iterations 2000 --compare --quiet
	fl_figures "federated learning, full Fashion-MNIST, 2000 iterations" "$w"
	fl_bytes "federated learning, full Fashion-MNIST" "README.md:190-193"
	local seed
	for seed in 2 3; do
		run "fl-full-seed$seed" "go run ./examples/federated-learning --data $FMNIST --iterations 2000 --seed $seed" -- \
			"$BIN/fl" --data "$FMNIST" --iterations 2000 --seed "$seed" --quiet
		emit "federated learning, full Fashion-MNIST, 2000 iterations, seed $seed: test accuracy" "README.md:171-173" \
			"$(grab "$R_LOG" '^  test accuracy' 's/.*test accuracy ([0-9.]+).*/\1/')"
	done
}

step full netns
m_netns() {
	local w="docs/RUNNING.md:291-311 (bridge), 321-337 (WAN)"
	if [[ $EUID -ne 0 ]] || ! ip netns list >/dev/null 2>&1; then
		skip "seven hosts in network namespaces" "$w" "needs root and 'ip netns' (run scripts/measure.sh --full as root)"
		return 0
	fi
	run netns-bridge "sudo scripts/netns-demo.sh 30" -- scripts/netns-demo.sh 30
	emit "netns, bridge, 30 iterations: model owner" "$w" \
		"$(grab "$R_LOG" 'training: 30 iterations' 's/.*training: //'); $(grab "$R_LOG" 'test accuracy' 's/.*(test accuracy [0-9.]+).*/\1/')"
	emit "netns, bridge, 30 iterations: bytes through the switch ports (sent / received)" "$w" \
		"$(awk '/traffic through/ { s = 1; next } s && $2 ~ /^(server|model|data)/ { printf "%s%s %s %s / %s %s", sep, $2, $4, $5, $6, $7; sep = ", " } /all 7 players|finished/ { s = 0 } END { print "" }' "$R_LOG")"
	local delay
	for delay in 20ms ""; do
		local name=netns-${delay:-nodelay}
		run "$name" "sudo scripts/netns-demo.sh ${delay:+--wan-delay $delay }--iteration-times 15 --seed 3" -- \
			scripts/netns-demo.sh ${delay:+--wan-delay "$delay"} --iteration-times 15 --seed 3
		emit "netns, ${delay:-no} delay, 15 iterations: iterations 1-5; warm" "$w" \
			"$(awk '/iteration +[1-5] +[0-9.]+ ms/ { printf "%s%s", sep, $(NF - 1); sep = ", " } /iterations 6-/ { w = $0; sub(/.*: /, "", w) } END { print " ms; warm " w }' "$R_LOG")"
	done
}

# ---- Main ---------------------------------------------------------------------
#
# In a function, so that bash has read all of it before it runs: editing
# this file while it runs then does no harm.

main() {
	if $list; then
		for s in "${STEPS[@]}"; do printf '%-8s %s\n' "${s%%:*}" "${s#*:}"; done
		exit 0
	fi

	case $tier in
	quick) COUNT=1 COUNT5=1 ;;
	*) COUNT=3 COUNT5=5 ;;
	esac
	rank() { case $1 in quick) echo 0 ;; default) echo 1 ;; full) echo 2 ;; esac }

	[[ -n $out ]] || out=/tmp/measure-$(date +%Y%m%d-%H%M%S).txt
	OUT=$out
	LOGS=${out%.txt}.logs
	mkdir -p "$LOGS" || refuse "cannot make $LOGS"
	: >"$OUT" || refuse "cannot write $OUT"
	WORK=$(mktemp -d /tmp/measure-work.XXXXXX) || refuse "cannot make a temporary directory"
	trap 'rm -rf "$WORK"' EXIT
	BIN=$WORK/bin
	mkdir -p "$BIN"
	FAILURES=0
	R_RC=0 R_LOG="" R_CMD="" R_LOAD="" R_SECS="" WAITED=""

	commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
	git -C "$ROOT" diff --quiet HEAD 2>/dev/null || commit="$commit (with uncommitted changes)"
	{
		echo "# scripts/measure.sh --$tier${only:+ --only $only}, $(date -Iseconds)"
		echo "# code: $commit; $(go version 2>/dev/null)"
		echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(uname -sr)"
		echo "# uptime at the start: $(uptime)"
		echo "# columns: figure | value(s) | command | load (1 min) before → after | seconds | where it is quoted"
		echo "# logs of every command: $LOGS"
	} | tee "$OUT"

	start=$SECONDS
	for s in "${STEPS[@]}"; do
		t=${s%%:*} name=${s#*:}
		(($(rank "$t") <= $(rank "$tier"))) || continue
		if [[ -n $only && $name != build && ! $name =~ $only ]]; then continue; fi
		if ! "m_$name" && [[ $name == build ]]; then
			echo "measure: the build failed (see $R_LOG); nothing else can run" >&2
			exit 1
		fi
	done
	echo "# done in $(((SECONDS - start) / 60)) min $(((SECONDS - start) % 60)) s; uptime at the end: $(uptime); $FAILURES figures failed or not found" | tee -a "$OUT"
	((FAILURES == 0))
}

main
exit
