#!/usr/bin/env bash
# Installs the peers hivesup is benchmarked against (benches/, `make bench`), all from
# Debian's packages: supervisord, s6, tini, dumb-init, the load generator wrk, and the
# small tools the harness drives (gcc for the stamp program, curl, procps, util-linux).
# Idempotent: a second run on the same machine only checks.
set -euo pipefail

need_apt=()
for pkg in supervisor s6 tini dumb-init wrk gcc libc6-dev curl procps util-linux python3; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# Debian's supervisor package starts a system-wide supervisord on install; the
# benchmark runs its own in the foreground, so the packaged one must not sit idle
# (and be measured) next to it.
if command -v systemctl >/dev/null && systemctl is-active --quiet supervisor 2>/dev/null; then
  systemctl stop supervisor || true
elif [[ -x /etc/init.d/supervisor ]] && /etc/init.d/supervisor status >/dev/null 2>&1; then
  /etc/init.d/supervisor stop >/dev/null || true
fi

for bin in supervisord s6-svscan s6-supervise tini dumb-init wrk gcc unshare; do
  command -v "$bin" >/dev/null || { echo "bench deps: $bin missing after install" >&2; exit 1; }
done
echo "bench deps ok: supervisor $(supervisord --version), $(tini --version | head -n1), dumb-init $(dpkg-query -W -f='${Version}' dumb-init), s6 $(dpkg-query -W -f='${Version}' s6), wrk $(dpkg-query -W -f='${Version}' wrk)"
