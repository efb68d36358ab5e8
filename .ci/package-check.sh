#!/usr/bin/env bash
# Builds the amd64 .deb, checks its contents, installs it on this machine (CI runs as root
# on a throwaway machine), checks the installed map, user, permissions and conffile
# handling, purges it again, and checks the systemd unit's sandbox score.
#
#   bash .ci/package-check.sh            # what CI runs
#   EXPOSURE_MAX=2.5                     # highest accepted `systemd-analyze security` score
#   PACKAGE_CHECK_NO_INSTALL=1           # build and inspect only (dev box without root)
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
EXPOSURE_MAX=${EXPOSURE_MAX:-2.5}
if [ "$(id -u)" = 0 ]; then SUDO=(); else SUDO=(sudo); fi
APT=(apt-get -q -y -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)

step() { printf '\n== %s (%ss)\n' "$*" "$SECONDS"; }
fail() { printf 'package-check: FAIL: %s\n' "$*" >&2; exit 1; }

# --- tools ---------------------------------------------------------------------------
need_apt=()
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
command -v dpkg-deb >/dev/null || need_apt+=(dpkg)
if [ ${#need_apt[@]} -gt 0 ]; then
    "${SUDO[@]}" "${APT[@]}" install --no-install-recommends "${need_apt[@]}" >/dev/null
fi
if ! cargo deb --version >/dev/null 2>&1; then
    step "cargo install --locked cargo-deb"
    cargo install --locked cargo-deb
fi

# --- the unit's sandbox --------------------------------------------------------------
step "systemd-analyze security --offline=true systemd/edgebus.service"
sec=$(systemd-analyze security --offline=true --no-pager systemd/edgebus.service 2>&1) || true
score=$(printf '%s\n' "$sec" | sed -n 's/.*Overall exposure level for edgebus.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || { printf '%s\n' "$sec" >&2; fail "no exposure score from systemd-analyze"; }
printf '%s\n' "$sec" | grep '✗' || true
echo "exposure $score (max $EXPOSURE_MAX)"
awk -v s="$score" -v m="$EXPOSURE_MAX" 'BEGIN { exit !(s <= m) }' || fail "exposure $score > $EXPOSURE_MAX"
if printf '%s\n' "$sec" | grep -qi 'unknown key\|unknown lvalue\|failed to parse'; then
    printf '%s\n' "$sec" | grep -i 'unknown\|failed' >&2
    fail "systemd does not understand part of the unit"
fi

# --- build and inspect the package ---------------------------------------------------
step "cargo deb"
cargo deb
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
version=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print([p for p in json.load(sys.stdin)["packages"] if p["name"]=="edgebus"][0]["version"])')
deb=$(ls -t "$target_dir"/debian/edgebus_"${version}"*_amd64.deb | head -1)
echo "package: $deb ($(stat -c %s "$deb") bytes)"

step "dpkg-deb -c / -I"
contents=$(dpkg-deb -c "$deb")
printf '%s\n' "$contents"
for f in ./usr/bin/edgebus ./etc/edgebus/edgebus.yaml 'lib/systemd/system/edgebus.service'; do
    printf '%s\n' "$contents" | grep -q -- "$f\$" || fail "$f missing from the package"
done
ctrl=$(mktemp -d); trap 'rm -rf "$ctrl"' EXIT
dpkg-deb -e "$deb" "$ctrl"
cat "$ctrl/control"
grep -qx /etc/edgebus/edgebus.yaml "$ctrl/conffiles" || fail "/etc/edgebus/edgebus.yaml is not a conffile"
grep -q '^Depends:.*adduser' "$ctrl/control" || fail "Depends lacks adduser"
for s in postinst postrm; do
    [ -x "$ctrl/$s" ] || fail "no $s script"
    sh -n "$ctrl/$s" || fail "$s is not valid sh"
    ! grep -q '#DEBHELPER#' "$ctrl/$s" || fail "#DEBHELPER# left unreplaced in $s"
done

if [ "${PACKAGE_CHECK_NO_INSTALL:-0}" = 1 ]; then
    echo "package-check: ok (not installed: PACKAGE_CHECK_NO_INSTALL=1) in ${SECONDS}s"
    exit 0
fi

# --- install, check, reinstall over an edited map, purge -------------------------------
step "apt-get install $deb"
"${SUDO[@]}" "${APT[@]}" install --no-install-recommends "$deb"
[ -x /usr/bin/edgebus ] || fail "/usr/bin/edgebus not installed"
id edgebus
groups=$(id -nG edgebus)
for g in edgebus dialout bluetooth; do
    [[ " $groups " == *" $g "* ]] || fail "user edgebus is not in group $g ($groups)"
done
[ "$(getent passwd edgebus | cut -d: -f7)" = /usr/sbin/nologin ] || fail "edgebus has a login shell"
[ "$(stat -c '%U:%G %a' /etc/edgebus/edgebus.yaml)" = "root:edgebus 640" ] \
    || fail "/etc/edgebus/edgebus.yaml is $(stat -c '%U:%G %a' /etc/edgebus/edgebus.yaml), want root:edgebus 640"
[ "$(stat -c '%U:%G %a' /var/lib/edgebus)" = "edgebus:edgebus 750" ] \
    || fail "/var/lib/edgebus is $(stat -c '%U:%G %a' /var/lib/edgebus), want edgebus:edgebus 750"

step "edgebus check -c /etc/edgebus/edgebus.yaml (as the service user)"
"${SUDO[@]}" runuser -u edgebus -- /usr/bin/edgebus check -c /etc/edgebus/edgebus.yaml
/usr/bin/edgebus --version

step "systemd-analyze verify (installed unit)"
if out=$(systemd-analyze verify /lib/systemd/system/edgebus.service 2>&1); then
    printf '%s\n' "$out"
else
    printf '%s\n' "$out" >&2
    # Without systemd as PID 1 verify can only complain about the missing manager.
    if printf '%s\n' "$out" | grep -qi 'unknown\|invalid\|failed to parse\|not executable\|bad'; then
        fail "systemd-analyze verify rejects the unit"
    fi
fi

step "reinstall keeps an edited map"
"${SUDO[@]}" sed -i 's/^  id: raspberrypi /  id: edited-by-test /' /etc/edgebus/edgebus.yaml
"${SUDO[@]}" dpkg -i --force-confold "$deb" >/dev/null
grep -q 'id: edited-by-test' /etc/edgebus/edgebus.yaml || fail "reinstall replaced the edited map"
[ "$(stat -c '%U:%G %a' /etc/edgebus/edgebus.yaml)" = "root:edgebus 640" ] || fail "reinstall lost the map's permissions"

step "apt-get purge edgebus"
"${SUDO[@]}" "${APT[@]}" purge edgebus >/dev/null
[ ! -e /usr/bin/edgebus ] || fail "/usr/bin/edgebus left after purge"
[ ! -e /var/lib/edgebus ] || fail "/var/lib/edgebus left after purge"
[ ! -e /etc/edgebus/edgebus.yaml ] || fail "/etc/edgebus/edgebus.yaml left after purge"
! dpkg-statoverride --list /etc/edgebus/edgebus.yaml >/dev/null || fail "statoverride left after purge"

echo
echo "package-check: ok in ${SECONDS}s (exposure $score)"
