#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, then runs
# pytest twice, with the compiled hot path and with the pure-Python one
# (GEVENTMAN_PURE_PYTHON=1; docs/compiled.md). TEST_MODES="pure" (or "compiled") runs one.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian packages used by some tests (only installed when missing).
need=()
command -v gcc >/dev/null || need+=(gcc)  # the compiled hot path (pip install builds it)
[ -x /usr/bin/chromium ] || need+=(chromium)  # test_websocket_browser.py, test_wsgi_websocket_browser.py
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v redis-server >/dev/null || need+=(redis-server)  # test_http_session_redis.py, test_gateway_distributed.py, test_gateway_docs.py
command -v memcached >/dev/null || need+=(memcached)        # test_gateway_distributed.py, test_gateway_docs.py (Store drivers)
command -v ip >/dev/null || need+=(iproute2)                # tests/test_gateway_distributed.py (ip netns)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
python3 -m pip install -q -e '.[test]'
status=0
for mode in ${TEST_MODES:-compiled pure}; do
  echo "== tests, $mode hot path"
  if [ "$mode" = pure ]; then
    GEVENTMAN_PURE_PYTHON=1 python3 -m pytest -q "$@" || status=1
  else
    GEVENTMAN_PURE_PYTHON= python3 -m pytest -q "$@" || status=1
  fi
done
exit $status
