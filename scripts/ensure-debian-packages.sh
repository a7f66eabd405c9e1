#!/bin/sh
# Install the Debian packages named as arguments when missing (apt-get update once, first).
# Never fails the build: a package that cannot be installed is reported here, and the tests
# that need it skip with that reason.
missing=""
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-debian-packages: no apt-get here; missing:$missing (tests needing them will skip)" >&2
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "ensure-debian-packages: not root, cannot install:$missing (tests needing them will skip)" >&2
    exit 0
fi
echo "ensure-debian-packages: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing; } >/tmp/ensure-debian-packages.log 2>&1; then
    echo "ensure-debian-packages: apt-get failed (see /tmp/ensure-debian-packages.log); tests needing$missing will skip" >&2
    tail -5 /tmp/ensure-debian-packages.log >&2
fi
exit 0
