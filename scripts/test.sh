#!/usr/bin/env bash
# Runs the whole test suite on real components and ends with one line `N passed, N failed`
# (with `, N skipped` when any were), taken from vitest's JSON report.
set -uo pipefail
cd "$(dirname "$0")/.."
report=$(mktemp --suffix=.json)
trap 'rm -f "$report"' EXIT

npx --no-install prettier --check --log-level warn . && npx --no-install eslint . && npx --no-install tsc --noEmit -p .
lint=$?
npx --no-install vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@"
status=$?
if [[ -s $report ]]; then
  node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const skipped = r.numPendingTests + r.numTodoTests;
    console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed${skipped ? `, ${skipped} skipped` : ""}`);
  ' "$report"
else
  echo "0 passed, 0 failed"
fi
if ((lint != 0)); then echo 'lint or type check failed' >&2; exit 1; fi
exit "$status"
