# Decodes MiBeacon service data with the xiaomi-ble package and prints its sensor values
# as JSON, for the cross-check in tests/ble_peer_xiaomi.rs. stdin: `MAC HEX` per line.
import sys, json, time
from xiaomi_ble import XiaomiBluetoothDeviceData
from habluetooth import BluetoothServiceInfoBleak
for line in sys.stdin:
    parts = line.split()
    if len(parts) != 2: continue
    mac, h = parts
    info = BluetoothServiceInfoBleak(name="TEST", address=mac, rssi=-60, manufacturer_data={},
        service_data={"0000fe95-0000-1000-8000-00805f9b34fb": bytes.fromhex(h)},
        service_uuids=["0000fe95-0000-1000-8000-00805f9b34fb"], source="local", device=None,
        advertisement=None, connectable=False, time=time.monotonic(), tx_power=None)
    out = {}
    try:
        u = XiaomiBluetoothDeviceData().update(info)
        for k, v in u.entity_values.items():
            if k.key == "signal_strength": continue
            out[k.key] = v.native_value
        for k, v in u.binary_entity_values.items():
            out[k.key] = bool(v.native_value)
    except Exception as e:
        out = {"error": repr(e)}
    print(json.dumps(out), flush=True)
