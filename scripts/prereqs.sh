# What the test suite needs besides Go and PostgreSQL, sourced by scripts/test.sh and
# scripts/test-citus.sh: the Better Auth fixture's and the typed-client test's packages, and, as root, Chromium (the
# reference page test), Prometheus (the metrics test), python3-dateutil (the recurrence
# tests' reference) and python3-aiosmtpd (the SMTP server of the e-mail tests) from Debian's
# packages.
echo "== Better Auth fixture and typed-client tools (npm ci)"
(cd testdata/betterauth && npm ci --no-audit --no-fund --loglevel=error)
(cd testdata/clients && npm ci --no-audit --no-fund --loglevel=error)
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then echo "== Chromium, for the reference page test (apt-get)"; DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi
if ! /usr/bin/python3 -c 'import dateutil' >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  echo "== python3-dateutil, the reference of the recurrence tests (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-dateutil >/dev/null
fi
if ! /usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  echo "== python3-aiosmtpd, the SMTP server of the e-mail tests (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-aiosmtpd >/dev/null
fi
if ! command -v prometheus >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  echo "== Prometheus, for the metrics test (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package starts its own daemon (on :9090) where an init system lets it; the test
  # runs a Prometheus of its own on a free port and needs none.
  if [ -d /run/systemd/system ]; then systemctl disable --now prometheus >/dev/null 2>&1 || true
  elif [ -x /etc/init.d/prometheus ]; then /etc/init.d/prometheus stop >/dev/null 2>&1 || true; fi
fi

