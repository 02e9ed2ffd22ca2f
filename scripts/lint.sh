#!/bin/sh
# Bans unsafe libc calls in the product and test sources and checks formatting.
set -u
bad=$(grep -nE '\b(strcpy|strcat|sprintf|vsprintf|atoi|atol|gets)\s*\(' src/*.c src/*.h tests/unit/*.c tests/fuzz/*.c examples/*/*.c 2>/dev/null | grep -v 'lint-ok')
if [ -n "$bad" ]; then
    echo "lint: banned functions (use snprintf, sl_parse_int64, memcpy with bounds):"
    echo "$bad"
    exit 1
fi
# Sources follow the committed .clang-format.
if command -v clang-format >/dev/null; then
    unformatted=$(for f in src/*.c src/*.h tests/unit/*.c tests/fuzz/*.c examples/*/*.c; do
        clang-format --dry-run "$f" 2>&1 | grep -q warning && echo "$f"; done)
    if [ -n "$unformatted" ]; then
        echo "lint: not clang-formatted (run make format):"
        echo "$unformatted"
        exit 1
    fi
fi
echo "lint: ok"
