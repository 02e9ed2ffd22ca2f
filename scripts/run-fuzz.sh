#!/bin/sh
# Runs each libFuzzer driver for SECONDS on its corpus (tests/fuzz/corpus/NAME)
# with its dictionary when present. New inputs go to a scratch dir so the
# committed corpus only changes on purpose.
set -u
secs=$1; shift
fail=0; passed=0; failed=0
for f in "$@"; do
    name=$(basename "$f")
    corpus=tests/fuzz/corpus/${name#fuzz_}
    scratch=build/fuzz/new-${name}
    mkdir -p "$corpus" "$scratch"
    dict=""
    [ -f "tests/fuzz/${name#fuzz_}.dict" ] && dict="-dict=tests/fuzz/${name#fuzz_}.dict"
    echo "fuzz: $name for ${secs}s"
    if ! "$f" -max_total_time="$secs" -print_final_stats=0 -artifact_prefix=build/fuzz/ \
        $dict "$scratch" "$corpus" >"build/fuzz/$name.log" 2>&1; then
        echo "fuzz: $name FAILED (see build/fuzz/$name.log)"; tail -30 "build/fuzz/$name.log"; fail=1
        failed=$((failed + 1))
    else
        passed=$((passed + 1))
    fi
done
echo "fuzz: $passed passed, $failed failed"
exit $fail
