# Decodes BTHome service data (one hex payload per stdin line) with the bthome-ble
# package and prints its values as JSON, for the cross-check in tests/ble_peer_bthome.rs.
import sys, json, time
from bthome_ble import BTHomeBluetoothDeviceData
from habluetooth import BluetoothServiceInfoBleak
for line in sys.stdin:
    h = line.strip()
    if not h: continue
    info = BluetoothServiceInfoBleak(name="TEST", address="A4:C1:38:8D:18:B2", rssi=-60, manufacturer_data={},
        service_data={"0000fcd2-0000-1000-8000-00805f9b34fb": bytes.fromhex(h)},
        service_uuids=["0000fcd2-0000-1000-8000-00805f9b34fb"], source="local", device=None,
        advertisement=None, connectable=False, time=time.monotonic(), tx_power=None)
    d = BTHomeBluetoothDeviceData()
    out = {}
    try:
        u = d.update(info)
        for k, v in u.entity_values.items():
            if k.key in ("signal_strength", "packet_id"): continue
            val = v.native_value
            out[k.key] = val if isinstance(val, (int, float, str, bool)) or val is None else str(val)
        for k, v in u.binary_entity_values.items():
            out[k.key] = bool(v.native_value)
    except Exception as e:
        out = {"error": repr(e)}
    print(json.dumps(out), flush=True)
