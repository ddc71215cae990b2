#!/usr/bin/env bash
# Checks a running Vibe Ensemble from outside, as a smoke test after a deploy:
#
#   VIBE_TOKEN=vibe_… [VIBE_METRICS_TOKEN=…] deployment/scripts/validate-deployment.sh https://vibe.example.com
#
#   health      GET /healthz answers 200 {"status":"ok"}
#   readiness   GET /readyz answers 200 "ready" (database reachable, migrations current)
#   auth        REST and /mcp refuse a request without a token, and one with a wrong token (401)
#   headers     nosniff, frame, referrer and content-security policies; HSTS when the URL is https
#   metrics     GET /metrics (with VIBE_METRICS_TOKEN as its bearer token, when set) is Prometheus
#               text with vibe_http_requests_total
#   mcp         with VIBE_TOKEN: tools/list names list_issues, and a tools/call list_issues succeeds
#   latency     SAMPLES (default 20) sequential GET /healthz and tools/call; prints p50/p95/max and
#               fails when a p95 exceeds LATENCY_BUDGET_MS (default 1000)
#
# Prints one line per check; exits 0 when all pass, 1 when any fails, 2 on bad usage.
# Any token works for the MCP check (a viewer token is enough); it is sent only to URL.
set -uo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ $# -eq 1 && $1 != -* ]] || usage
BASE=${1%/}
[[ $BASE =~ ^https?:// ]] || { echo "error: URL must start with http:// or https:// (got '$1')" >&2; exit 2; }
command -v curl >/dev/null || { echo "error: curl is required" >&2; exit 2; }
[[ -n ${VIBE_TOKEN:-} ]] || { echo "error: set VIBE_TOKEN to a token of this server (any role) for the MCP check" >&2; exit 2; }
SAMPLES=${SAMPLES:-20}
LATENCY_BUDGET_MS=${LATENCY_BUDGET_MS:-1000}
[[ $SAMPLES =~ ^[1-9][0-9]*$ ]] || { echo "error: SAMPLES must be a positive integer" >&2; exit 2; }
[[ $LATENCY_BUDGET_MS =~ ^[1-9][0-9]*$ ]] || { echo "error: LATENCY_BUDGET_MS must be a positive integer" >&2; exit 2; }

failures=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
CURL=(curl --silent --show-error --max-time 10 --connect-timeout 5)

ok() { printf 'ok    %-10s %s\n' "$1" "$2"; }
fail() { printf 'FAIL  %-10s %s\n' "$1" "$2"; failures=$((failures + 1)); }

# request NAME METHOD PATH [curl args…]: body in $tmp/NAME.body, headers in $tmp/NAME.headers, echoes the status
request() {
  local name=$1 method=$2 path=$3
  shift 3
  "${CURL[@]}" -X "$method" -o "$tmp/$name.body" -D "$tmp/$name.headers" -w '%{http_code}' "$@" \
    "$BASE$path" 2>"$tmp/$name.err" || true
}

MCP_HEADERS=(-H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream')
mcp() { # mcp NAME JSON [token]
  local auth=()
  [[ -n ${3:-} ]] && auth=(-H "Authorization: Bearer $3")
  request "$1" POST /mcp "${MCP_HEADERS[@]}" "${auth[@]}" --data "$2"
}
LIST='{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
CALL='{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"list_issues","arguments":{}}}'

# health
status=$(request health GET /healthz)
if [[ $status == 200 ]] && grep -q '"status":"ok"' "$tmp/health.body"; then
  ok health "GET /healthz 200"
else
  fail health "GET /healthz answered ${status:-nothing} $(head -c 200 "$tmp/health.err" "$tmp/health.body" 2>/dev/null)"
fi

# readiness
status=$(request ready GET /readyz)
if [[ $status == 200 ]] && grep -q '"status":"ready"' "$tmp/ready.body"; then
  ok readiness "GET /readyz 200 $(head -c 100 "$tmp/ready.body")"
else
  fail readiness "GET /readyz answered ${status:-nothing} $(head -c 200 "$tmp/ready.body" 2>/dev/null)"
fi

# auth enforced
expect_401() { # LABEL STATUS
  if [[ $2 == 401 ]]; then ok auth "$1: 401"; else fail auth "$1 answered ${2:-nothing}, expected 401"; fi
}
expect_401 "GET /api/v1/projects without a token" "$(request noauth GET /api/v1/projects)"
expect_401 "GET /api/v1/projects with a wrong token" \
  "$(request badauth GET /api/v1/projects -H "Authorization: Bearer vibe_not_a_real_token")"
expect_401 "POST /mcp without a token" "$(mcp mcpnoauth "$LIST")"
expect_401 "POST /mcp with a wrong token" "$(mcp mcpbadauth "$LIST" vibe_not_a_real_token)"

# security headers (on the health answer: every answer carries them)
header() { grep -i "^$1:" "$tmp/health.headers" | head -1 | cut -d: -f2- | tr -d '\r' | sed 's/^ *//'; }
check_header() { # NAME PATTERN
  local value
  value=$(header "$1")
  if [[ -n $value && $value =~ $2 ]]; then ok headers "$1: $value"; else fail headers "$1 missing or not /$2/ (got '$value')"; fi
}
check_header x-content-type-options '^nosniff$'
check_header x-frame-options '^DENY$'
check_header referrer-policy '^(no-referrer|same-origin)$'
check_header content-security-policy "frame-ancestors 'none'"
if [[ $BASE == https://* ]]; then
  check_header strict-transport-security 'max-age=[1-9][0-9]*'
fi
if [[ -n $(header server) ]]; then fail headers "server header reveals '$(header server)'"; fi

# metrics
metrics_auth=()
[[ -n ${VIBE_METRICS_TOKEN:-} ]] && metrics_auth=(-H "Authorization: Bearer $VIBE_METRICS_TOKEN")
status=$(request metrics GET /metrics "${metrics_auth[@]}")
if [[ $status == 200 ]] && grep -q '^vibe_http_requests_total{' "$tmp/metrics.body"; then
  ok metrics "GET /metrics 200 with vibe_http_requests_total"
elif [[ $status == 401 || $status == 403 ]]; then
  fail metrics "GET /metrics answered $status: set VIBE_METRICS_TOKEN to the server's metrics token"
else
  fail metrics "GET /metrics answered $status without vibe_http_requests_total"
fi

# MCP round trip
status=$(mcp tools "$LIST" "$VIBE_TOKEN")
if [[ $status == 200 ]] && grep -q '"name":"list_issues"' "$tmp/tools.body"; then
  ok mcp "tools/list 200, names list_issues"
else
  fail mcp "tools/list answered $status: $(head -c 200 "$tmp/tools.body" 2>/dev/null)"
fi
status=$(mcp call "$CALL" "$VIBE_TOKEN")
if [[ $status == 200 ]] && grep -q '"isError":false' "$tmp/call.body"; then
  ok mcp "tools/call list_issues 200, isError false"
else
  fail mcp "tools/call list_issues answered $status: $(head -c 200 "$tmp/call.body" 2>/dev/null)"
fi

# latency baseline: sequential, so it measures one request's time, not the server's throughput
percentiles() { # prints "p50 p95 max" in ms from seconds on stdin
  sort -n | awk '{ v[NR] = $1 * 1000 } END {
    i50 = int((NR - 1) * 0.50) + 1; i95 = int((NR - 1) * 0.95) + 1
    printf "%.1f %.1f %.1f\n", v[i50], v[i95], v[NR] }'
}
measure() { # NAME curl-args…: SAMPLES timings
  local name=$1 i t errors=0
  shift
  : >"$tmp/$name.times"
  for ((i = 0; i < SAMPLES; i++)); do
    if t=$("${CURL[@]}" --fail -o /dev/null -w '%{time_total}' "$@" 2>/dev/null); then
      echo "$t" >>"$tmp/$name.times"
    else
      errors=$((errors + 1))
    fi
  done
  if ((errors)); then
    fail latency "$name: $errors of $SAMPLES requests failed"
    return
  fi
  read -r p50 p95 max < <(percentiles <"$tmp/$name.times")
  if awk -v p="$p95" -v b="$LATENCY_BUDGET_MS" 'BEGIN { exit !(p <= b) }'; then
    ok latency "$name: p50 ${p50} ms, p95 ${p95} ms, max ${max} ms over $SAMPLES requests"
  else
    fail latency "$name: p95 ${p95} ms over the ${LATENCY_BUDGET_MS} ms budget (p50 ${p50} ms, max ${max} ms)"
  fi
}
measure healthz "$BASE/healthz"
measure mcp-call -X POST "${MCP_HEADERS[@]}" -H "Authorization: Bearer $VIBE_TOKEN" --data "$CALL" "$BASE/mcp"

if ((failures)); then
  echo "$failures check(s) failed against $BASE"
  exit 1
fi
echo "all checks passed against $BASE"
