#!/usr/bin/env bash
# Installs the real peers the integration tests talk to (brokers, Modbus servers, serial
# tools, MQTT-SN and BLE reference clients/decoders). Safe to run again.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
APT=(apt-get -q -y -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
if [ "$(id -u)" = 0 ]; then SUDO=(); else SUDO=(sudo); fi

"${SUDO[@]}" "${APT[@]}" update >/dev/null
"${SUDO[@]}" "${APT[@]}" install --no-install-recommends \
  mosquitto mosquitto-clients socat mbpoll >/dev/null
# The packaged mosquitto service is not wanted: tests start their own brokers on free ports.
if command -v systemctl >/dev/null 2>&1; then "${SUDO[@]}" systemctl disable --now mosquitto >/dev/null 2>&1 || true; fi

python3 -m pip install --quiet --disable-pip-version-check -r .ci/requirements.txt
