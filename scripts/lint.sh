#!/bin/sh
# Bans unsafe libc calls in the product and test sources.
set -u
bad=$(grep -nE '\b(strcpy|strcat|sprintf|vsprintf|atoi|atol|gets)\s*\(' src/*.c src/*.h tests/unit/*.c tests/fuzz/*.c examples/*/*.c 2>/dev/null | grep -v 'lint-ok')
if [ -n "$bad" ]; then
    echo "lint: banned functions (use snprintf, sl_parse_int64, memcpy with bounds):"
    echo "$bad"
    exit 1
fi
echo "lint: ok"
