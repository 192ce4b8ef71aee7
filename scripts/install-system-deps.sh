#!/usr/bin/env bash
# Installs what the browser tests need from Debian's packages: Chromium (Playwright drives
# it through executable_path; it cannot download its own browser here) and Arabic fonts;
# and promtool (Debian ships it in `prometheus`) for the alert rules' test, tests/test_ops_rules.py;
# and Dovecot (`dovecot-imapd`), the IMAP server tests/test_bounce_mailbox.py starts privately;
# and npm, for axe-core (tests/test_web_accessibility.py).
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -d /usr/share/fonts/truetype/noto ] && ls /usr/share/fonts/truetype/noto | grep -q NotoNaskhArabic || need+=(fonts-noto-core)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] || need+=(dovecot-imapd)
# npm installs axe-core (pinned in package.json) for the accessibility test: Makefile's node-deps.
command -v npm >/dev/null 2>&1 || need+=(npm)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${need[*]} (apt-get)"
  if [[ " ${need[*]} " == *" dovecot-imapd "* ]] && [ ! -e /usr/sbin/policy-rc.d ]; then
    # Its postinst would start the system's IMAP server on ports 143 and 993; the tests run
    # their own. No service starts while apt-get runs (policy-rc.d), and it is disabled below.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  if [[ " ${need[*]} " == *" prometheus "* ]]; then
    # Only its promtool is wanted: the Prometheus server the package may start is stopped
    # and kept from starting at boot.
    if [ -d /run/systemd/system ]; then systemctl stop prometheus >/dev/null 2>&1 || true; fi
    if command -v systemctl >/dev/null 2>&1; then systemctl disable prometheus >/dev/null 2>&1 || true; fi
    service prometheus stop >/dev/null 2>&1 || true
    update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
  if [[ " ${need[*]} " == *" dovecot-imapd "* ]]; then
    if [ -d /run/systemd/system ]; then systemctl stop dovecot.socket dovecot >/dev/null 2>&1 || true; fi
    if command -v systemctl >/dev/null 2>&1; then systemctl disable dovecot.socket dovecot >/dev/null 2>&1 || true; fi
    service dovecot stop >/dev/null 2>&1 || true
    update-rc.d dovecot disable >/dev/null 2>&1 || true
  fi
else
  echo "note: ${need[*]} not installed; browser, promtool and Dovecot tests will be skipped (install them with apt-get as root)" >&2
fi
