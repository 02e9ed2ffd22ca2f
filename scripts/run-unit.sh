#!/bin/sh
# Runs each cmocka unit-test binary; fails if any fails.
set -u
fail=0; passed=0; failed=0
for t in "$@"; do
    if "$t"; then passed=$((passed + 1)); else failed=$((failed + 1)); fail=1; echo "FAILED: $t"; fi
done
echo "unit: $passed passed, $failed failed"
exit $fail
