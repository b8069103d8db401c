#!/usr/bin/env bash
# test-rules.sh PROMTOOL: `make test-rules`. Checks and unit-tests the alert rules, then
# proves both checks fail on bad input (deploy/prometheus/testdata).
set -euo pipefail
promtool="$1"
cd "$(dirname "$0")/../prometheus"
passed=0
failed=0
run() { # NAME EXPECT(pass|fail) COMMAND...
  local name="$1" expect="$2"
  shift 2
  local out rc=0
  out="$("$@" 2>&1)" || rc=$?
  if { [ "$expect" = pass ] && [ $rc = 0 ]; } || { [ "$expect" = fail ] && [ $rc != 0 ]; }; then
    passed=$((passed + 1))
    echo "ok    $name"
  else
    failed=$((failed + 1))
    echo "FAIL  $name (exit $rc, expected to $expect)"
    echo "$out" | sed 's/^/      /'
  fi
}
run "promtool check rules rules.yaml" pass "$promtool" check rules rules.yaml
run "promtool test rules rules_test.yaml" pass "$promtool" test rules rules_test.yaml
run "rejects testdata/bad-rules.yaml (check rules)" fail "$promtool" check rules testdata/bad-rules.yaml
run "rejects testdata/failing_test.yaml (test rules)" fail "$promtool" test rules testdata/failing_test.yaml
echo "test-rules: $passed passed, $failed failed"
[ "$failed" = 0 ]
