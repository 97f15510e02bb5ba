# Sourced by scripts/test: the dashboard's browser test (tests/browser) drives Debian's Chromium
# through Playwright. Install it when it is missing (as root, with apt-get), once; Playwright's own
# browser downloads are not used (nor reachable on every machine).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "postee: installing Chromium for the browser test (apt-get install chromium)" >&2
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
    else
        echo "postee: the browser test needs Chromium at /usr/bin/chromium: install it as root (apt-get install chromium)" >&2
    fi
fi
