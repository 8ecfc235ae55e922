#!/bin/sh
# The test suite: `sh test.sh` runs every case and exits 1 if one fails.
failed=0
check() {
    got=$(sh slug.sh "$1")
    if [ "$got" = "$2" ]; then
        echo "ok: '$1' -> '$got'"
    else
        echo "FAIL: '$1' -> '$got', expected '$2'"
        failed=$((failed + 1))
    fi
}
check "hello world" "hello-world"
check "  spaces  around  " "spaces-around"
check "already-a-slug" "already-a-slug"
check "Rust & KDL!" "rust-kdl"
if [ "$failed" -gt 0 ]; then
    echo "$failed of 4 failed"
    exit 1
fi
echo "all 4 passed"
